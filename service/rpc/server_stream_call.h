// One server-streaming RPC on the async API (Upload). The handler may take hours (a staged
// index build), so it runs on a thread of its own rather than holding a polling thread; each
// emitted message waits for its write to complete, which a polling thread reports.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "service/rpc/call.h"

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

  static void Listen(Service* service, grpc::ServerCompletionQueue* cq, Requester requester,
                     std::shared_ptr<const Handler> handler) {
    new ServerStreamCall(service, cq, requester, std::move(handler));
  }

  void Proceed(bool ok) override {
    if (!ok || finished_) return delete this;
    Listen(service_, cq_, requester_, handler_);
    finished_ = true;
    std::thread([this] {
      grpc::Status status = (*handler_)(context_, request_, [this](const Response& r) {
        return Write(r);
      });
      writer_.Finish(status, this);
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
    bool done_ = false;
    bool ok_ = false;
  };

  ServerStreamCall(Service* service, grpc::ServerCompletionQueue* cq, Requester requester,
                   std::shared_ptr<const Handler> handler)
      : service_(service), cq_(cq), requester_(requester), handler_(std::move(handler)),
        writer_(&context_) {
    (service_->*requester_)(&context_, &request_, &writer_, cq_, cq_, this);
  }

  bool Write(const Response& response) {
    if (client_gone_) return false;
    writer_.Write(response, &write_done_);
    client_gone_ = !write_done_.Wait();
    return !client_gone_;
  }

  Service* service_;
  grpc::ServerCompletionQueue* cq_;
  Requester requester_;
  std::shared_ptr<const Handler> handler_;
  grpc::ServerContext context_;
  Request request_;
  Writer writer_;
  WriteDone write_done_;
  bool client_gone_ = false;
  bool finished_ = false;
};

}  // namespace cnp::rpc
