// The executor of one call's coroutine: its GrpcContext's executor, with the call's log scope
// (service/common/log.h: the RPC and peer that log lines about the call name) set around every
// stretch of the coroutine that runs through it.
//
// A log scope is thread-local, and a coroutine must not hold one across a suspension: other
// calls' coroutines run on the same thread meanwhile. But every resumption that comes from
// elsewhere - a worker pool's answer, a blocking executor's result - is dispatched through the
// coroutine's executor, which is this one: so the code that runs after such an await (where a
// function's errors are logged) runs inside the call's scope, and nothing else does.
#pragma once

#include <type_traits>
#include <utility>

#include "asio/execution.hpp"
#include "service/common/log.h"
#include "service/grpc_asio/grpc_context.h"

namespace cnp::rpc {

class CallExecutor {
 public:
  CallExecutor(grpc_asio::GrpcExecutor inner, const char* rpc, const void* call,
               CallLogScope::PeerOf peer_of) noexcept
      : inner_(inner), rpc_(rpc), call_(call), peer_of_(peer_of) {}

  grpc_asio::GrpcContext& query(asio::execution::context_t context) const noexcept {
    return inner_.query(context);
  }
  asio::execution::blocking_t query(asio::execution::blocking_t blocking) const noexcept {
    return inner_.query(blocking);
  }
  static constexpr asio::execution::relationship_t query(asio::execution::relationship_t) {
    return asio::execution::relationship.fork;
  }
  CallExecutor require(asio::execution::blocking_t::never_t never) const noexcept {
    return CallExecutor(inner_.require(never), rpc_, call_, peer_of_);
  }
  CallExecutor require(asio::execution::blocking_t::possibly_t possibly) const noexcept {
    return CallExecutor(inner_.require(possibly), rpc_, call_, peer_of_);
  }

  template <class Function>
  void execute(Function&& function) const {
    inner_.execute([function = std::decay_t<Function>(std::forward<Function>(function)),
                    rpc = rpc_, call = call_, peer_of = peer_of_]() mutable {
      CallLogScope scope(rpc, call, peer_of);
      std::move(function)();
    });
  }

  bool running_in_this_thread() const noexcept { return inner_.running_in_this_thread(); }

  friend bool operator==(const CallExecutor& a, const CallExecutor& b) noexcept {
    return a.inner_ == b.inner_ && a.call_ == b.call_;
  }
  friend bool operator!=(const CallExecutor& a, const CallExecutor& b) noexcept {
    return !(a == b);
  }

 private:
  grpc_asio::GrpcExecutor inner_;
  const char* rpc_;
  const void* call_;
  CallLogScope::PeerOf peer_of_;
};

}  // namespace cnp::rpc
