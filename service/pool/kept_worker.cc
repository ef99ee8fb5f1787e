#include "service/pool/kept_worker.h"

#include <functional>
#include <utility>

#include "asio/post.hpp"

namespace cnp::pool {

asio::awaitable<absl::StatusOr<Reply>> KeptWorker::Run(const Task& task, absl::Time deadline,
                                                       TaskLogListener* logs) {
  if (kept_ == nullptr) {
    if (keeping_) co_return co_await runner_.Run(task, deadline);
    auto link = std::make_shared<Link>(Link{this});
    // Called on a thread of the pool's: the request crosses to the owner's executor. (A named
    // local, not a temporary in the co_await's operands: GCC 12 destroys such temporaries
    // twice.)
    std::function<void()> wanted = [link, executor = executor_] {
      asio::post(executor, [link] {
        if (link->owner != nullptr) link->owner->LetGo();
      });
    };
    keeping_ = true;
    AsyncTaskRunner::KeptRun ran =
        co_await runner_.RunAndKeep(task, deadline, std::move(wanted), logs);
    keeping_ = false;
    // Asked for it back before this call resumed (the pool sets `asked_back` once and does not
    // ask again): it goes back now rather than stay kept while someone waits.
    const bool asked = std::exchange(give_back_, false);
    if (ran.kept != nullptr) {
      kept_ = std::move(ran.kept);
      link_ = std::move(link);
      if (asked) LetGo();
    }
    co_return std::move(ran.reply);
  }
  if (exchanging_) co_return co_await runner_.Run(task, deadline);
  exchanging_ = true;
  absl::StatusOr<Reply> reply = absl::UnknownError("no exchange");
  if (logs != nullptr) {
    reply = co_await kept_->ExchangeForwardingLogs(task, deadline, *logs);
  } else {
    reply = co_await kept_->Exchange(task, deadline);
  }
  exchanging_ = false;
  if (reply.ok()) {
    if (give_back_ || kept_->ShouldGiveBack()) LetGo();
    co_return reply;
  }
  // A failed exchange leaves the lease unusable; its worker was replaced, or is given back.
  // A worker that died while kept idle never got the task, which goes to another.
  const bool ended_before_task = kept_->EndedBeforeTask();
  LetGo();
  if (ended_before_task) co_return co_await runner_.Run(task, deadline);
  co_return reply;
}

void KeptWorker::LetGo() {
  if (exchanging_ || keeping_) {
    give_back_ = true;
    return;
  }
  if (link_ != nullptr) link_->owner = nullptr;
  link_.reset();
  kept_.reset();
  give_back_ = false;
}

}  // namespace cnp::pool
