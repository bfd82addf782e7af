# xxHash (Debian libxxhash-dev): checksums of prompt-cache files (src/cache/cache_file.cc).
find_path(TQKV_XXHASH_INCLUDE xxhash.h REQUIRED)
find_library(TQKV_XXHASH_LIB xxhash REQUIRED)
target_include_directories(tqkv PRIVATE ${TQKV_XXHASH_INCLUDE})
target_link_libraries(tqkv PRIVATE ${TQKV_XXHASH_LIB})
