// Status and StatusOr<T>: how every recoverable failure leaves the tqkv API.
//
// No exception crosses the public API. A Status is cheap to copy (a code and a message);
// `ok()` is the only thing most callers test. Messages are written for the person running the
// program ("head_dim must be >= 1, got 0"), not for the developer.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace tqkv {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,   // the caller passed something out of the documented domain
  kNotFound,          // a named file, tensor or key does not exist
  kCorrupt,           // stored data failed validation (bad magic, truncated, out-of-range offset)
  kUnsupported,       // a valid request that this build does not implement
  kOutOfRange,        // an index or size past a limit (context full, position too large)
  kIoError,           // the operating system refused (open, read, mmap)
  kInternal,          // a broken invariant that is not the caller's fault
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: head_dim must be >= 1, got 0"
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status out_of_range(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status io_error(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Either a value or a non-OK Status. Accessing value() of an error is a broken invariant.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status s) : v_(std::move(s)) {}  // NOLINT: implicit by design, like absl::StatusOr
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace tqkv

// Propagate a non-OK Status to the caller.
#define TQKV_RETURN_IF_ERROR(expr)             \
  do {                                         \
    ::tqkv::Status tqkv_status_ = (expr);      \
    if (!tqkv_status_.ok()) return tqkv_status_; \
  } while (0)

#define TQKV_CONCAT_INNER_(a, b) a##b
#define TQKV_CONCAT_(a, b) TQKV_CONCAT_INNER_(a, b)
// TQKV_ASSIGN_OR_RETURN(auto x, make_x());
#define TQKV_ASSIGN_OR_RETURN(lhs, expr)                                   \
  auto TQKV_CONCAT_(tqkv_sor_, __LINE__) = (expr);                         \
  if (!TQKV_CONCAT_(tqkv_sor_, __LINE__).ok())                             \
    return TQKV_CONCAT_(tqkv_sor_, __LINE__).status();                     \
  lhs = std::move(TQKV_CONCAT_(tqkv_sor_, __LINE__)).value()
