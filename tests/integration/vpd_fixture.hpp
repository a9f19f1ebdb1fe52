#pragma once

// Shared fixture of the lifecycle, restart and config tests: a private network namespace,
// a temporary directory and one vpd (not started), plus read-backs from the kernel (`ip -j`
// through the harness, netdev features through ETHTOOL_GFEATURES) and from vpd's files.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/journal.hpp"
#include "control/state_file.hpp"
#include "support/ethtool.hpp"
#include "support/harness.hpp"

namespace vp::test {

using nlohmann::json;

/// The file's bytes, or nullopt when it cannot be read (absent).
inline std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

/// Whether `ip -j link` lists `flag` ("UP", "LOWER_UP") for the link.
inline bool has_flag(const json& link, const std::string& flag) {
  if (!link.is_object() || !link.contains("flags")) return false;
  for (const auto& f : link["flags"]) {
    if (f == flag) return true;
  }
  return false;
}

/// The TAP features that TUNSETOFFLOAD flags (as vpd names them in status.tun_offloads,
/// "CSUM|TSO4|...") turn on, by ETH_SS_FEATURES name. TUN_F_UFO has no netdev feature
/// on current kernels; TUN_F_USO4|USO6 together are NETIF_F_GSO_UDP_L4.
inline std::map<std::string, bool> features_for_tun_offloads(const std::string& names) {
  auto has = [&](const std::string& n) { return contains("|" + names + "|", "|" + n + "|"); };
  return {
      {"tx-checksum-ip-generic", has("CSUM")},              // NETIF_F_HW_CSUM
      {"tx-tcp-segmentation", has("TSO4")},                 // NETIF_F_TSO
      {"tx-tcp6-segmentation", has("TSO6")},                // NETIF_F_TSO6
      {"tx-tcp-ecn-segmentation", has("TSO_ECN")},          // NETIF_F_TSO_ECN
      {"tx-udp-segmentation", has("USO4") && has("USO6")},  // NETIF_F_GSO_UDP_L4
  };
}

/// The features above, as the kernel has them now for `ifname` (empty when unreadable).
inline std::map<std::string, bool> tap_offload_features(const std::string& ifname) {
  std::map<std::string, bool> out;
  auto all = device_features(ifname);
  if (!all) return out;
  for (const auto& [name, on] : features_for_tun_offloads("")) {
    (void)on;
    auto it = all->find(name);
    if (it != all->end()) out[name] = it->second;
  }
  return out;
}

class VpdFixture : public ::testing::Test {
 protected:
  using Output = vp::test::Run;  // ::testing::Test has a Run() of its own

  void SetUp() override {
    ASSERT_EQ(enter_private_netns(), "");
    dir_ = std::make_unique<TempDir>();
    vpd_ = std::make_unique<Vpd>(dir_->path());
  }

  void TearDown() override {
    if (HasFailure() && vpd_) {
      std::cerr << "---- vpd log ----\n" << vpd_->log() << "-----------------\n";
    }
    vpd_.reset();  // kills vpd before its directory goes
    dir_.reset();
  }

  Vpd& vpd() { return *vpd_; }
  std::string path(const std::string& name) const { return dir_->path() + "/" + name; }
  std::string state_path() const { return vpd_->state_dir() + "/state.json"; }
  /// The saved state as vpd would load it (state.json with its journal's changes applied,
  /// in state.json's format); state.json's bytes when it does not load, "<absent>" when
  /// nothing is saved.
  std::string state_text() const {
    const auto snapshot = read_text(state_path());
    const auto journal = read_text(control::journal_path(state_path()));
    if (!snapshot && !journal) return "<absent>";
    auto saved = control::load_state(state_path());
    if (!saved) return snapshot.value_or("<absent>");
    return control::encode_state(*saved);
  }
  json state_json() const { return json::parse(state_text(), nullptr, false); }

  void write_config(const std::string& text) { write_text(vpd_->config_path(), text); }

  /// vpctl ARGS, expected to succeed.
  Output ok(const std::vector<std::string>& args) {
    Output r = vpd_->ctl(args);
    EXPECT_EQ(r.status, 0) << "vpctl " << joined(args) << "\nstdout: " << r.out
                           << "\nstderr: " << r.err;
    return r;
  }

  /// vpctl ARGS, expected to be refused with `code`.
  Output refused(const std::vector<std::string>& args, const std::string& code) {
    Output r = vpd_->ctl(args);
    EXPECT_EQ(r.status, 1) << "vpctl " << joined(args) << "\nstdout: " << r.out
                           << "\nstderr: " << r.err;
    EXPECT_TRUE(contains(r.err, "(" + code + ")"))
        << "vpctl " << joined(args) << ": expected (" << code << ") on stderr, got: " << r.err;
    return r;
  }

  /// `vpctl --json NAME`: the endpoint object (null on failure).
  json show(const std::string& name) { return vpd_->ctl_json({name}); }

  /// Names of every interface in the namespace.
  static std::vector<std::string> link_names() {
    std::vector<std::string> out;
    auto all = ip_json({"link", "show"});
    if (!all.is_array()) return out;
    for (const auto& l : all) out.push_back(l.value("ifname", ""));
    return out;
  }

  /// What the kernel says about every interface that matters for vpd: identity, MAC,
  /// MTU, flags, master, alias, kind, global addresses and, for TAPs, the offload
  /// features. Fields that move on their own (timers, statistics) are left out.
  static json kernel_snapshot() {
    json out = json::object();
    auto all = ip_json({"-d", "link", "show"});
    if (!all.is_array()) return "ip -j -d link show failed";
    for (const auto& l : all) {
      const std::string name = l.value("ifname", "");
      json j;
      for (const char* key : {"ifindex", "mtu", "address", "master", "ifalias", "promiscuity"}) {
        if (l.contains(key)) j[key] = l[key];
      }
      j["up"] = has_flag(l, "UP");
      const json info = l.value("linkinfo", json::object());
      j["kind"] = info.value("info_kind", "");
      if (info.contains("info_data") && info["info_data"].is_object()) {
        j["persist"] = info["info_data"].value("persist", false);
      }
      j["addresses"] = addresses_of(name);
      if (j["kind"] == "tun") j["features"] = tap_offload_features(name);
      out[name] = j;
    }
    return out;
  }

  /// The kernel, the state file's bytes and vpctl's view, for before/after comparisons.
  json snapshot() {
    json list = vpd_->ctl_json({"list"});
    return json{{"kernel", kernel_snapshot()}, {"state.json", state_text()}, {"vpctl list", list}};
  }

  /// Sends SIGHUP and waits until vpd has reloaded (RELOADING=1, then READY=1 again).
  bool reload() {
    const size_t before = vpd_->notifications().size();
    if (::kill(vpd_->pid(), SIGHUP) != 0) return false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      const auto notes = vpd_->notifications();
      bool reloading = false;
      for (size_t i = before; i < notes.size(); ++i) {
        if (contains(notes[i], "RELOADING=1")) {
          reloading = true;
        } else if (reloading && contains(notes[i], "READY=1")) {
          return true;
        }
      }
      if (!vpd_->alive()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  static std::string joined(const std::vector<std::string>& words) {
    std::string out;
    for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
    return out;
  }

 private:
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Vpd> vpd_;
};

}  // namespace vp::test
