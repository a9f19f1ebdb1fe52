#include "daemon/options.hpp"

#include <charconv>
#include <cstdint>
#include <string_view>

#include "sys/str.hpp"

namespace vp::daemon {

const char* const kUsage =
    "Usage: vpd [OPTIONS] [peer=PATH,bind=PATH,mac=MAC,...[,peer=PATH,...]]\n"
    "\n"
    "vpd gives each virtual machine a host-side network interface vpN (a TAP device that can\n"
    "join a bridge) and is the guest's virtio-net peer. It runs in the foreground.\n"
    "\n"
    "Options:\n"
    "  --config FILE       endpoints declared one per line (default /etc/vpd/vpd.conf)\n"
    "  --runtime-dir DIR   control socket DIR/control.sock and default bind sockets\n"
    "                      DIR/vpN.sock (default /run/vpd)\n"
    "  --state-dir DIR     where endpoints are saved (default /var/lib/vpd)\n"
    "  --check-config      check the config file and endpoint arguments, then exit\n"
    "  --verbose           log debug lines too\n"
    "  --workers N         data-path threads, 1 to 64 (default one per core, at most 4);\n"
    "                      queue pair p >= 1 of an endpoint runs on another one than pair 0\n"
    "  --no-io-uring       write guest frames to the TAP with writev, one system call per\n"
    "                      frame, even where io_uring is available\n"
    "  --message-timeout SECONDS\n"
    "                      end a vhost-user session whose front-end leaves one message\n"
    "                      incomplete this long (1 to 3600, default 10)\n"
    "  --request-timeout SECONDS\n"
    "                      close a control connection whose request line stays without its\n"
    "                      newline this long (1 to 3600, default 30)\n"
    "  --version           print the version and exit\n"
    "  --help              print this help and exit\n"
    "\n"
    "Endpoint arguments use the io-pkt syntax: every peer= starts a new endpoint, named\n"
    "vp0, vp1, ... (or name=PREFIX). Configure endpoints at run time with vpctl(8).\n";

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string& out) -> Result<void> {
      const size_t eq = arg.find('=');
      if (eq != std::string_view::npos) {
        out = arg.substr(eq + 1);
      } else if (i + 1 < argc) {
        out = argv[++i];
      } else {
        return fail("usage", str(arg, " needs a value"));
      }
      if (out.empty()) return fail("usage", str(arg.substr(0, eq), " needs a value"));
      return {};
    };
    auto is = [&](std::string_view name) {
      return arg == name ||
             (arg.starts_with(name) && arg.size() > name.size() && arg[name.size()] == '=');
    };
    auto seconds = [&](std::chrono::seconds& out) -> Result<void> {
      std::string text;
      if (auto got = value(text); !got) return got;
      const std::string_view name = arg.substr(0, arg.find('='));
      uint64_t n = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ec != std::errc{} || end != text.data() + text.size() || n < 1 ||
          n > static_cast<uint64_t>(kMaxTimeout.count())) {
        return fail("usage", str(name, " takes a whole number of seconds from 1 to ",
                                 kMaxTimeout.count(), ", not \"", text, "\""));
      }
      out = std::chrono::seconds(n);
      return {};
    };
    Result<void> ok;
    if (arg == "--help" || arg == "-h") {
      o.help = true;
    } else if (arg == "--version") {
      o.version = true;
    } else if (arg == "--check-config") {
      o.check_config = true;
    } else if (arg == "--verbose" || arg == "-v") {
      o.verbose = true;
    } else if (arg == "--no-io-uring") {
      o.io_uring = false;
    } else if (is("--message-timeout")) {
      ok = seconds(o.message_timeout);
    } else if (is("--request-timeout")) {
      ok = seconds(o.request_timeout);
    } else if (is("--config")) {
      ok = value(o.config);
    } else if (is("--runtime-dir")) {
      ok = value(o.runtime_dir);
    } else if (is("--state-dir")) {
      ok = value(o.state_dir);
    } else if (is("--workers")) {
      std::string text;
      ok = value(text);
      if (ok) {
        unsigned n = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (ec != std::errc{} || end != text.data() + text.size() || n < 1 || n > 64) {
          return fail("usage", str("--workers takes a number of data-path threads from 1 to 64, "
                                   "not '",
                                   text, "'"));
        }
        o.workers = n;
      }
    } else if (arg.starts_with("-") && arg.find('=') == std::string_view::npos) {
      return fail("usage", str("unknown option ", arg, "; see vpd --help"));
    } else {
      o.endpoint_specs.emplace_back(arg);
    }
    if (!ok) return std::unexpected(ok.error());
  }
  return o;
}

}  // namespace vp::daemon
