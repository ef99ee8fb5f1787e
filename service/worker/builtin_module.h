// _cnp: the builtin extension module behind couch_named_python's log(), emit() and list
// steps. They are C functions because map functions call them once per row.
#pragma once

namespace cnp::worker {

// Must be called before the interpreter starts.
void RegisterBuiltinModule();

}  // namespace cnp::worker
