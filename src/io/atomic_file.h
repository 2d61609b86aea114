// Atomic, durable file replacement: the one way mpsim writes a result file (safetensors,
// checkpoints' `latest`, metrics, resolved configs), so a crash or kill -9 at any moment leaves
// either the old complete file or the new complete one, never a partial file.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string_view>

namespace mpsim::detail {

// A failed atomic write; what() names the file and the reason ("cannot create a temporary file
// in 'dir': No space left on device"). The target is unchanged and no temporary is left behind.
class AtomicWriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Replaces `path` by `bytes`: a temporary file in the same directory (rename is atomic only
// within a file system) is written, given mode 0644, flushed to disk (fsync), renamed over
// `path`, and then the directory entry is flushed too. Throws AtomicWriteError.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// Flushes a directory's entries (renames inside it) to disk. Best effort: a directory that
// cannot be opened or synced (some file systems refuse) is ignored, since the files themselves
// are complete either way.
void sync_directory(const std::filesystem::path& dir);

}  // namespace mpsim::detail
