// TQKV_CHECK: always-on assertion for broken invariants (never for user input; use Status).
#pragma once
#include <cstdio>
#include <cstdlib>

#define TQKV_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "tqkv: internal invariant failed at %s:%d: %s\n", __FILE__, \
                   __LINE__, #cond);                                                  \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)
