// One unary RPC on the async API: wait for a request, run the handler on this thread, finish.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "service/rpc/call.h"
#include "service/rpc/shutdown_gate.h"

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
  static void Listen(Service* service, grpc::ServerCompletionQueue* cq, ShutdownGate* gate,
                     Requester requester, std::shared_ptr<const Handler> handler) {
    auto* call = new UnaryCall(service, cq, gate, requester, std::move(handler));
    if (!gate->Open([call] {
          (call->service_->*call->requester_)(&call->context_, &call->request_,
                                              &call->responder_, call->cq_, call->cq_, call);
        })) {
      delete call;
    }
  }

  ~UnaryCall() override {
    if (begun_) gate_->CallEnds();
  }

  void Proceed(bool ok) override {
    if (!ok || finished_) {
      delete this;
      return;
    }
    Listen(service_, cq_, gate_, requester_, handler_);
    gate_->CallBegins();
    begun_ = true;
    grpc::Status status = (*handler_)(context_, request_, response_);
    finished_ = true;
    // Closed when the server shut down while the handler ran: there is no one left to answer.
    if (!gate_->Open([&] {
          if (status.ok()) {
            responder_.Finish(response_, status, this);
          } else {
            responder_.FinishWithError(status, this);
          }
        })) {
      delete this;
    }
  }

 private:
  UnaryCall(Service* service, grpc::ServerCompletionQueue* cq, ShutdownGate* gate,
            Requester requester, std::shared_ptr<const Handler> handler)
      : service_(service), cq_(cq), gate_(gate), requester_(requester),
        handler_(std::move(handler)), responder_(&context_) {}

  Service* service_;
  grpc::ServerCompletionQueue* cq_;
  ShutdownGate* gate_;
  Requester requester_;
  std::shared_ptr<const Handler> handler_;
  grpc::ServerContext context_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
  bool finished_ = false;
  bool begun_ = false;
};

}  // namespace cnp::rpc
