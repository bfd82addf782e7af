#include "core/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace tqkv {

StatusOr<NpyArray> parse_npy(const std::string& b, const std::string& name) {
  auto bad = [&](const std::string& why) { return corrupt(name + ": not a valid .npy file: " + why); };
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) return bad("bad magic");
  const int major = static_cast<unsigned char>(b[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) return bad("truncated header");
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    hstart = 12;
  } else {
    return bad("unsupported version " + std::to_string(major));
  }
  if (hlen > b.size() - hstart) return bad("truncated header");
  const std::string h = b.substr(hstart, hlen);
  auto field = [&](const std::string& key) -> std::string {
    size_t p = h.find("'" + key + "'");
    if (p == std::string::npos) return "";
    p = h.find(':', p);
    if (p == std::string::npos) return "";
    return h.substr(p + 1);
  };
  std::string descr = field("descr");
  int elem = 0;
  if (descr.find("'<f4'") != std::string::npos && descr.find("'<f4'") < 4) elem = 4;
  else if (descr.find("'<f8'") != std::string::npos && descr.find("'<f8'") < 4) elem = 8;
  else return bad("only little-endian float32 ('<f4') and float64 ('<f8') arrays are supported");
  std::string fo = field("fortran_order");
  if (fo.find("False") == std::string::npos || fo.find("False") > 3) return bad("fortran_order arrays are not supported");
  std::string sh = field("shape");
  size_t lp = sh.find('('), rp = sh.find(')');
  if (lp == std::string::npos || rp == std::string::npos || rp < lp) return bad("missing shape");
  NpyArray a;
  std::string dims = sh.substr(lp + 1, rp - lp - 1);
  std::stringstream ss(dims);
  std::string tok;
  size_t count = 1;
  while (std::getline(ss, tok, ',')) {
    size_t s = tok.find_first_not_of(" "), e = tok.find_last_not_of(" ");
    if (s == std::string::npos) continue;
    tok = tok.substr(s, e - s + 1);
    for (char c : tok)
      if (c < '0' || c > '9') return bad("bad shape entry '" + tok + "'");
    if (tok.size() > 12) return bad("shape entry too large");
    const int64_t v = std::stoll(tok);
    a.shape.push_back(v);
    if (v != 0 && count > (size_t(1) << 40) / static_cast<size_t>(v)) return bad("array too large");
    count *= static_cast<size_t>(v);
  }
  const size_t data_start = hstart + hlen;
  if ((b.size() - data_start) / elem < count) return bad("truncated data (shape needs " + std::to_string(count) + " values)");
  a.data.resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (elem == 4) {
      std::memcpy(&a.data[i], b.data() + data_start + 4 * i, 4);
    } else {
      double d;
      std::memcpy(&d, b.data() + data_start + 8 * i, 8);
      a.data[i] = static_cast<float>(d);
    }
  }
  return a;
}

StatusOr<NpyArray> read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found("cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_npy(ss.str(), path);
}

Status write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  size_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    h += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    if (i + 1 < shape.size()) h += " ";
    count *= static_cast<size_t>(shape[i]);
  }
  h += "), }";
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) return io_error("cannot write '" + path + "'");
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = static_cast<uint16_t>(h.size());
  f.write(reinterpret_cast<const char*>(&hl), 2);
  f.write(h.data(), h.size());
  f.write(reinterpret_cast<const char*>(data), count * 4);
  return f ? Status::Ok() : io_error("write failed for '" + path + "'");
}

}  // namespace tqkv
