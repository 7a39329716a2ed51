internal import Glibc

/// Where ``StderrLogHandler`` writes finished lines; tests pass a closure that collects them.
public struct LogLineSink: Sendable {
    private let writeLine: @Sendable (String) -> Void

    public init(_ writeLine: @escaping @Sendable (String) -> Void) {
        self.writeLine = writeLine
    }

    public func write(_ line: String) {
        writeLine(line)
    }

    /// File descriptor 2, one `write` per line so concurrent lines do not interleave
    /// (up to PIPE_BUF bytes on a pipe); retried on EINTR and short writes.
    public static let standardError = LogLineSink { line in
        var bytes = Array((line + "\n").utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(STDERR_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    // Nowhere left to report a failing stderr; drop the line.
                    return
                }
            }
        }
    }
}
