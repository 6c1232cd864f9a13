// What a worker says when a parser crashes it (issue 10).
//
// A worker is pid 1 of its own pid namespace, and the kernel never delivers
// a signal to such a process unless it has a handler for it, or the kernel
// itself raised it for a fault. So without handlers a crash inside a parser
// still ends the worker (faults are forced), but nothing says where, and a
// SIGSEGV/SIGBUS/... sent from outside (an operator, the tests) is dropped.
// The handlers write one line naming the backup, the signal and its origin,
// plus a backtrace, to the worker's stderr (the daemon's log), then end the
// worker by that signal: a fault is re-raised by returning to it, a sent
// signal by causing the matching fault where x86 has one.
#pragma once

#include <string>

namespace sendense::worker {

void install_crash_report(const std::string& backup_id);

}  // namespace sendense::worker
