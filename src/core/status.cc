#include "tqkv/status.h"

namespace tqkv {

std::string Status::to_string() const {
  const char* name = "ok";
  switch (code_) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: name = "invalid argument"; break;
    case StatusCode::kNotFound: name = "not found"; break;
    case StatusCode::kCorrupt: name = "corrupt data"; break;
    case StatusCode::kUnsupported: name = "unsupported"; break;
    case StatusCode::kOutOfRange: name = "out of range"; break;
    case StatusCode::kIoError: name = "I/O error"; break;
    case StatusCode::kInternal: name = "internal error"; break;
  }
  return std::string(name) + ": " + message_;
}

}  // namespace tqkv
