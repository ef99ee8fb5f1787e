// One unary RPC on the async API: wait for a request, run the handler on this thread, finish.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "service/rpc/call.h"

namespace cnp::rpc {

template <class Service, class Request, class Response>
class UnaryCall final : public Call {
 public:
  using Requester = void (Service::*)(grpc::ServerContext*, Request*,
                                      grpc::ServerAsyncResponseWriter<Response>*,
                                      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // Runs on the polling thread; the returned status finishes the call.
  using Handler = std::function<grpc::Status(grpc::ServerContext&, Request&, Response&)>;

  // Starts accepting calls of this method on `cq`. Each accepted call arms the next one.
  static void Listen(Service* service, grpc::ServerCompletionQueue* cq, Requester requester,
                     std::shared_ptr<const Handler> handler) {
    new UnaryCall(service, cq, requester, std::move(handler));
  }

  void Proceed(bool ok) override {
    if (!ok || finished_) {
      delete this;
      return;
    }
    Listen(service_, cq_, requester_, handler_);
    grpc::Status status = (*handler_)(context_, request_, response_);
    finished_ = true;
    if (status.ok()) {
      responder_.Finish(response_, status, this);
    } else {
      responder_.FinishWithError(status, this);
    }
  }

 private:
  UnaryCall(Service* service, grpc::ServerCompletionQueue* cq, Requester requester,
            std::shared_ptr<const Handler> handler)
      : service_(service), cq_(cq), requester_(requester), handler_(std::move(handler)),
        responder_(&context_) {
    (service_->*requester_)(&context_, &request_, &responder_, cq_, cq_, this);
  }

  Service* service_;
  grpc::ServerCompletionQueue* cq_;
  Requester requester_;
  std::shared_ptr<const Handler> handler_;
  grpc::ServerContext context_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
  bool finished_ = false;
};

}  // namespace cnp::rpc
