#pragma once

#include <string>
#include <string_view>

#include "control/state_file.hpp"
#include "sys/error.hpp"

namespace vp::control {

// The saved state is a snapshot (the state file, written whole and atomically) plus a
// journal next to it (PATH.journal): one line of JSON per accepted change, appended and
// fdatasync'ed before vpd answers, so that one change costs O(1) bytes of I/O. A record is
// {"put": ENDPOINT} (the whole endpoint, as in the state file) or {"remove": NAME}; both
// are idempotent, so replaying a journal over a snapshot that already holds its changes
// (a crash between compaction's rename and the journal's truncation) changes nothing.

std::string journal_path(const std::string& state_path);

std::string encode_put(const SavedEndpoint& endpoint);
std::string encode_remove(std::string_view name);

/// Applies the journal `text` to `state` and counts the records applied in `records`.
/// A last record that is cut short (no newline, or not JSON: a crash in mid-append) is
/// ignored; any other bad record is code "state-corrupt".
Result<void> replay_journal(State& state, std::string_view text, size_t* records = nullptr);

/// Appends one record (from encode_put / encode_remove) and fdatasyncs it; a new journal's
/// directory entry is fsync'ed too. On failure the journal is cut back to where it was, so
/// a refused change leaves nothing behind.
Result<void> append_journal(const std::string& state_path, std::string_view record);

/// Writes `state` as the new snapshot (atomically, see save_state) and then empties the
/// journal. On failure the journal is left as it was (it still holds every change).
Result<void> compact_state(const std::string& state_path, const State& state);

}  // namespace vp::control
