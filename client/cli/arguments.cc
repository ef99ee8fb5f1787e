#include "client/cli/arguments.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/lib/channel_target.h"
#include "common/closest_name.h"
#include "common/default_target.h"
#include "common/system_user.h"

namespace cnp::cli {

absl::StatusOr<Arguments> ParseArguments(int argc, char** argv, const std::set<std::string>& valued,
                                         const std::set<std::string>& flags) {
  return ParseArguments(std::vector<std::string>(argv, argv + argc), valued, flags);
}

absl::StatusOr<Arguments> ParseArguments(const std::vector<std::string>& argv,
                                         const std::set<std::string>& valued,
                                         const std::set<std::string>& flags) {
  Arguments args;
  const int argc = static_cast<int>(argv.size());
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" && flags.count("help")) {
      args.options["help"] = "";
      continue;
    }
    // A dash and a letter is an option written as other tools write theirs (-x, -t): cnp's
    // are all --name. It was taken for a positional, and `cnp upload -x URL DB FILE` said
    // "-x" is not a CouchDB URL (a probe). A value that may start with a dash (-1) stays one.
    if (arg.size() > 1 && arg[0] == '-' && arg[1] != '-' && absl::ascii_isalpha(arg[1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown option ", arg, ": cnp's options are written --name (see --help); an "
          "argument that begins with '-' goes after --"));
    }
    if (arg == "-" || !absl::StartsWith(arg, "--")) {
      args.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      for (++i; i < argc; ++i) args.positional.push_back(argv[i]);
      break;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (flags.count(name)) {
      if (has_value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      args.options[name] = "";
    } else if (valued.count(name)) {
      if (!has_value) {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        value = argv[++i];
      }
      // An empty value (an unset shell variable, "--target=$TARGET") must not quietly mean the
      // default: for --target that would be another server than the one meant.
      if (value.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--", name, " was given no value; give it one, or leave the option out (see "
            "--help)"));
      }
      args.options[name] = value;
    } else {
      std::vector<std::string> known(flags.begin(), flags.end());
      known.insert(known.end(), valued.begin(), valued.end());
      if (std::optional<std::string> meant = ClosestName(name, known)) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown option --", name, "; did you mean --", *meant, "? (see --help)"));
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name, " (see --help)"));
    }
  }
  // Connection options that can never work together are refused here, before any input is read
  // or any connection tried (which would end in a generic "no cnp-server answers").
  if (valued.count("target") && !args.Has("help")) {
    const client::ChannelSecurity security = ConnectionSecurity(args);
    const std::string target = args.Get("target", DefaultTarget());
    if (absl::Status s = client::ChannelTargetUri(target).status(); !s.ok()) return s;
    if (absl::Status s = client::CheckTlsTarget(security, target); !s.ok()) return s;
    if (!security.auth_token_file.empty()) {
      if (absl::Status s = client::CheckSecretStaysPrivate(security, target, client::kBearerToken);
          !s.ok()) {
        return s;
      }
    }
    if (!security.server_user.empty()) {
      if (absl::StatusOr<uid_t> uid = ResolveUser(security.server_user, "server-user"); !uid.ok()) {
        return uid.status();
      }
    }
    // The files named are read now, so that one missing or unreadable is a usage error (exit 2)
    // said at once, not a failed call after the whole input has been read.
    if (absl::Status s = client::LoadChannelSecurity(security, target).status(); !s.ok()) {
      return absl::InvalidArgumentError(s.message());
    }
  }
  return args;
}

absl::StatusOr<int64_t> NumberOption(const Arguments& args, const std::string& name,
                                     int64_t fallback, int64_t minimum, const std::string& what) {
  if (!args.Has(name)) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(args.Get(name), &value) || value < minimum) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " needs ", what));
  }
  return value;
}

const char kConnectionHelp[] =
    "  --target=ADDR     the service (default: $CNP_TARGET or unix:/tmp/cnp-<uid>/cnp.sock);\n"
    "                    replicas as ADDR,ADDR,... (IP:port) or dns:///NAME:PORT, round robin,\n"
    "                    a call whose replica goes away retried on another\n"
    "  --tls             TLS to a TCP target, trusting the system's CAs\n"
    "  --tls-ca=PEM      TLS, trusting these CAs to have signed the service's certificate\n"
    "  --tls-cert=PEM    client certificate, for a service that requires one (with --tls-key)\n"
    "  --tls-key=PEM     its private key (mode 0600)\n"
    "  --insecure        plaintext to a TCP target beyond loopback (refused otherwise), for a\n"
    "                    network you trust; secrets are still never sent in plaintext\n"
    "  --auth-token-file=FILE  bearer token the service requires (mode 0600); never sent in\n"
    "                    plaintext off this host (a TCP target beyond loopback needs --tls)\n"
    "  --server-user=USER  a unix-socket service runs as USER (name or uid), e.g. cnp: its\n"
    "                    socket and directory may belong to USER; otherwise only to you or root\n";

std::set<std::string> WithConnectionOptions(std::set<std::string> valued) {
  valued.insert({"target", "tls-ca", "tls-cert", "tls-key", "auth-token-file",
                 "server-user"});
  return valued;
}

std::set<std::string> WithConnectionFlags(std::set<std::string> flags) {
  flags.insert({"tls", "insecure"});
  return flags;
}

client::ChannelSecurity ConnectionSecurity(const Arguments& args) {
  return {.tls = args.Has("tls"),
          .tls_ca_file = args.Get("tls-ca"),
          .tls_cert_file = args.Get("tls-cert"),
          .tls_key_file = args.Get("tls-key"),
          .auth_token_file = args.Get("auth-token-file"),
          .server_user = args.Get("server-user"),
          .insecure = args.Has("insecure")};
}

std::string WithHelpHint(absl::string_view message) {
  constexpr absl::string_view kHint = " (see --help)";
  return absl::EndsWith(message, kHint) ? std::string(message) : absl::StrCat(message, kHint);
}

}  // namespace cnp::cli
