// protobuf's own log lines (a string field with invalid UTF-8, a message it cannot serialize)
// in the service's log: in its format (--log-format), and at most one line per place in
// protobuf's code per interval, the next one saying how many it stood for. protobuf would
// otherwise write each one to stderr as it comes, so that whoever could make the server parse
// or write such a message could fill the log as fast as they could send.
//
// A parse that wants protobuf's reason for refusing a message (to answer with it, as request
// parsing does, service/rpc/request_parsing.h) holds a ProtobufLogCapture meanwhile: the lines
// protobuf writes on that thread go to it, not to the log.
#pragma once

#include <chrono>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp {

inline constexpr std::chrono::steady_clock::duration kProtobufLogInterval = std::chrono::seconds(10);

// The clock the interval is measured on: steady_clock's, unless a test brings its own.
using ProtobufLogClock = std::chrono::steady_clock::time_point (*)();

// Installs the handler (google::protobuf::SetLogHandler) for the whole process, with this
// interval between two lines of one place. Call at start-up: only the first installation (this
// or the first capture's, with the default interval) counts.
void RouteProtobufLog(std::chrono::steady_clock::duration interval = kProtobufLogInterval,
                      ProtobufLogClock now = &std::chrono::steady_clock::now);

// While it lives, what protobuf logs on this thread is collected here instead of logged (the
// handler is installed if it was not). It must not be held across a coroutine's suspension:
// another call's lines would be taken.
class ProtobufLogCapture {
 public:
  ProtobufLogCapture();
  ~ProtobufLogCapture();
  ProtobufLogCapture(const ProtobufLogCapture&) = delete;
  ProtobufLogCapture& operator=(const ProtobufLogCapture&) = delete;

  // protobuf's lines, joined by "; "; empty when it said nothing.
  const std::string& text() const { return text_; }
  // Why protobuf refused a message, for an answer: what it said, without its advice to the
  // schema's author; when it said nothing, that the bytes are no such message.
  std::string Reason() const;
  // Where the handler puts a line.
  void Append(absl::string_view line);

 private:
  std::string text_;
  ProtobufLogCapture* previous_;
};

}  // namespace cnp
