// Text input, plain or .xz (tqkv/text_io.h).
#include "tqkv/text_io.h"

#include <lzma.h>

#include <cstdint>
#include <vector>

#include "core/file_io.h"

namespace tqkv {

StatusOr<std::string> read_text_file(const std::string& path, uint64_t max_bytes) {
  const bool xz = path.size() >= 3 && path.compare(path.size() - 3, 3, ".xz") == 0;
  // The compressed file gets the same cap as plain text; the decompressed text is capped below.
  TQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, read_file(path, max_bytes, "text file"));
  if (!xz) return std::string(raw.begin(), raw.end());
  lzma_stream s = LZMA_STREAM_INIT;
  // 256 MiB dictionary memory limit: enough for any xz preset (-9e uses 674 MiB to compress but
  // 65 MiB to decompress).
  if (lzma_stream_decoder(&s, uint64_t{256} << 20, LZMA_CONCATENATED) != LZMA_OK)
    return internal_error("liblzma: cannot initialize the decoder");
  struct Ender { lzma_stream* s; ~Ender() { lzma_end(s); } } ender{&s};
  std::string out;
  std::vector<uint8_t> buf(1 << 16);
  s.next_in = raw.data();
  s.avail_in = raw.size();
  while (true) {
    s.next_out = buf.data();
    s.avail_out = buf.size();
    const lzma_ret r = lzma_code(&s, LZMA_FINISH);
    const size_t got = buf.size() - s.avail_out;
    if (out.size() + got > max_bytes)
      return invalid_argument("'" + path + "' decompresses to more than " + std::to_string(max_bytes >> 20) +
                              " MiB of text, the limit (split the text)");
    out.append(reinterpret_cast<const char*>(buf.data()), got);
    if (r == LZMA_STREAM_END) break;
    if (r == LZMA_MEMLIMIT_ERROR) return invalid_argument("'" + path + "' needs more than 256 MiB to decompress");
    if (r != LZMA_OK) return corrupt("'" + path + "' is not a valid .xz file (liblzma error " + std::to_string(r) + ")");
  }
  return out;
}

}  // namespace tqkv
