// `sendense-restore sandbox-check` (issue 10): the forbidden actions a
// worker is made to try, one per fresh worker (an action the filter kills
// ends it). The list is shared by the CLI, which names and judges them, and
// the worker, which tries them (worker/probes.cpp, Op::probe).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "worker/protocol.h"

namespace sendense::worker {

// What must stop a probe. Another stop (an errno where the filter should
// have killed) still blocks it, but means a layer of the sandbox is missing.
enum class Stop { filter_kill, filter_trap, error };

struct ProbeInfo {
  const char* name;
  const char* what;  // what an attacker holding the worker would be doing
  Stop stop;
};

inline constexpr std::array kProbes = {
    ProbeInfo{"open", "open a host file by path (/etc/shadow)", Stop::filter_kill},
    ProbeInfo{"open_by_handle", "open a file by handle (open_by_handle_at)", Stop::filter_kill},
    ProbeInfo{"execve", "run a program (/bin/sh)", Stop::filter_kill},
    ProbeInfo{"socket", "make a network socket", Stop::filter_kill},
    ProbeInfo{"connect", "connect a socket", Stop::filter_kill},
    ProbeInfo{"ptrace", "trace another process", Stop::filter_kill},
    ProbeInfo{"kill", "signal another process", Stop::filter_kill},
    ProbeInfo{"setuid", "become root again (setuid 0)", Stop::filter_kill},
    ProbeInfo{"mount", "mount a filesystem", Stop::filter_kill},
    ProbeInfo{"unshare", "make a user namespace", Stop::filter_kill},
    ProbeInfo{"bpf", "load a BPF program", Stop::filter_kill},
    ProbeInfo{"io_uring", "set up io_uring (calls outside the filter's sight)", Stop::filter_kill},
    ProbeInfo{"unlisted", "a call not on the allowlist (fchmod of the image)", Stop::filter_trap},
    ProbeInfo{"write_image", "write to the backup image it reads", Stop::error},
    ProbeInfo{"memory", "allocate past the address-space limit", Stop::error},
    ProbeInfo{"files", "open descriptors without limit", Stop::error},
};

// The worker's answer to one probe.
enum class ProbeOutcome : uint32_t {
  allowed = 0,       // the action succeeded: the sandbox failed
  refused = 1,       // the call returned an error (errno)
  not_applied = 2,   // this build does not apply the limit (sanitizer builds: RLIMIT_AS)
};
struct ProbeResult {
  ProbeOutcome outcome = ProbeOutcome::refused;
  int error = 0;
  std::string detail;
};

inline void put_probe_result(Writer& w, const ProbeResult& r) {
  w.u32(static_cast<uint32_t>(r.outcome));
  w.u32(static_cast<uint32_t>(r.error));
  w.str(r.detail);
}
inline ProbeResult get_probe_result(Reader& r) {
  ProbeResult p;
  const uint32_t outcome = r.u32();
  if (outcome > static_cast<uint32_t>(ProbeOutcome::not_applied)) p.outcome = ProbeOutcome::allowed;  // unknown: assume the worst
  else p.outcome = static_cast<ProbeOutcome>(outcome);
  p.error = static_cast<int>(r.u32());
  p.detail = r.str();
  return p;
}

// In the worker, sandboxed: tries probe `name`. An action the filter kills
// never returns. Throws Error(EINVAL) for an unknown name.
ProbeResult try_probe(std::string_view name);

}  // namespace sendense::worker
