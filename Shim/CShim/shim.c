// The storage behind swiftheap_shim.h: the thread-local slot, the static area, the version string.
#include "swiftheap_shim.h"

__thread void *swiftheap_tls_slot __attribute__((tls_model("initial-exec"), visibility("hidden"))) = NULL;

__attribute__((aligned(64), visibility("hidden"))) unsigned char swiftheap_static_area[SWIFTHEAP_STATIC_AREA_BYTES];

// Package.swift defines SWIFTHEAP_VERSION for this target.
__attribute__((visibility("hidden"))) const char *sh_version(void) { return SWIFTHEAP_VERSION; }
