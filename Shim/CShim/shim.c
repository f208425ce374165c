// The storage behind swiftheap_shim.h: the thread-local slot.
#include "swiftheap_shim.h"

__thread void *swiftheap_tls_slot __attribute__((tls_model("initial-exec"), visibility("hidden"))) = NULL;

__attribute__((aligned(64), visibility("hidden"))) unsigned char swiftheap_static_area[SWIFTHEAP_STATIC_AREA_BYTES];
