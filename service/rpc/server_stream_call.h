// One server-streaming RPC on the async API (Upload). The handler may take hours (a staged
// index build), so it runs on a thread of its own rather than holding a polling thread; each
// emitted message waits for its write to complete, which a polling thread reports.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "service/rpc/call.h"
#include "service/rpc/shutdown_gate.h"

namespace cnp::rpc {

template <class Service, class Request, class Response>
class ServerStreamCall final : public Call {
 public:
  using Writer = grpc::ServerAsyncWriter<Response>;
  using Requester = void (Service::*)(grpc::ServerContext*, Request*, Writer*,
                                      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // Sends one message; false when the client has gone away.
  using Emit = std::function<bool(const Response&)>;
  using Handler =
      std::function<grpc::Status(grpc::ServerContext&, const Request&, const Emit&)>;

  static void Listen(Service* service, grpc::ServerCompletionQueue* cq, ShutdownGate* gate,
                     Requester requester, std::shared_ptr<const Handler> handler) {
    auto* call = new ServerStreamCall(service, cq, gate, requester, std::move(handler));
    if (!gate->Open([call] {
          (call->service_->*call->requester_)(&call->context_, &call->request_, &call->writer_,
                                              call->cq_, call->cq_, call);
        })) {
      delete call;
    }
  }

  ~ServerStreamCall() override {
    if (begun_) gate_->CallEnds();
  }

  void Proceed(bool ok) override {
    if (!ok || finished_) return delete this;
    Listen(service_, cq_, gate_, requester_, handler_);
    gate_->CallBegins();
    begun_ = true;
    finished_ = true;
    std::thread([this] {
      grpc::Status status = (*handler_)(context_, request_, [this](const Response& r) {
        return Write(r);
      });
      if (!gate_->Open([&] { writer_.Finish(status, this); })) delete this;
    }).detach();
  }

 private:
  // Completion of one write, waited for by the handler's thread.
  class WriteDone final : public Call {
   public:
    void Proceed(bool ok) override {
      absl::MutexLock lock(&mu_);
      done_ = true;
      ok_ = ok;
    }
    bool Wait() {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&done_));
      done_ = false;
      return ok_;
    }

   private:
    absl::Mutex mu_;
    bool done_ ABSL_GUARDED_BY(mu_) = false;
    bool ok_ ABSL_GUARDED_BY(mu_) = false;
  };

  ServerStreamCall(Service* service, grpc::ServerCompletionQueue* cq, ShutdownGate* gate,
                   Requester requester, std::shared_ptr<const Handler> handler)
      : service_(service), cq_(cq), gate_(gate), requester_(requester),
        handler_(std::move(handler)), writer_(&context_) {}

  bool Write(const Response& response) {
    if (client_gone_) return false;
    // A closed gate means the server has shut down: as good as a client gone.
    client_gone_ = !gate_->Open([&] { writer_.Write(response, &write_done_); }) ||
                   !write_done_.Wait();
    return !client_gone_;
  }

  Service* service_;
  grpc::ServerCompletionQueue* cq_;
  ShutdownGate* gate_;
  Requester requester_;
  std::shared_ptr<const Handler> handler_;
  grpc::ServerContext context_;
  Request request_;
  Writer writer_;
  WriteDone write_done_;
  bool client_gone_ = false;
  bool finished_ = false;
  bool begun_ = false;
};

}  // namespace cnp::rpc
