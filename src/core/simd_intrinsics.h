// <immintrin.h> for the AVX2/AVX-512 translation units.
//
// GCC 12's AVX-512 headers initialize the "undefined" vectors that some intrinsics start from
// with themselves (`__m512 __Y = __Y;`), which -Wmaybe-uninitialized reports inside the header at
// every inlined use (GCC bug 105593, fixed in GCC 13). The warning is switched off for the
// header's own lines only: the diagnostic state follows the location, so tqkv's code keeps
// -Wall -Wextra, -Wmaybe-uninitialized included.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>  // clang: no such false positive
#endif
