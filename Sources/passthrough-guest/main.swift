// passthrough-guest: runs inside a guest, asks the host's passthrough-agent to prepare or finish a reflash of a
// card lent to this guest. Glibc only (no Foundation), built with the Swift runtime linked in statically, so the
// one file can be copied into any x86-64 Linux guest. Stands alone: the executable's entry point; the logic is in
// PassthroughGuest.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PassthroughGuest

func writeAll(_ text: String, to fd: Int32) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written < 0, errno == EINTR { continue }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}

let outcome = GuestTool.run(Array(CommandLine.arguments.dropFirst()))
writeAll(outcome.output, to: STDOUT_FILENO)
writeAll(outcome.errors, to: STDERR_FILENO)
exit(outcome.status)
