// Which task the worker's replies answer (worker.proto: Task.sequence, echoed in
// Reply.sequence). The server numbers its tasks to each worker and takes a reply that echoes
// another number for a fault of the worker's: the worker is replaced, and the caller gets an
// error rather than another task's answer.
//
// The task a reply answers is the last one read: a list's steps and its final reply answer the
// list_row task read last, and a direct session's interim frames its DirectSession task.
#pragma once

#include "service/worker/protocol/worker.pb.h"

namespace cnp::worker {

// Called for each task read from the server, before anything is done with it.
void StartAnswering(const v1::Task& task);

// For a task whose frame could not be read as a Task (not one, or memory ran out parsing it):
// the next number, as the server numbers its tasks to a worker 1, 2, ... A reply stamped with
// the last task's number was taken for a fault ("task #2 when task #3 was due"; a security
// review), where it is the failure of this one.
void StartAnsweringUnreadTask();

// Marks `reply` as the answer to the task being answered.
void StampAnswer(v1::Reply& reply);

}  // namespace cnp::worker
