internal import CSystemd
internal import Glibc

/// Hands encoded fields to journald.
///
/// Uses `sd_journal_sendv` because the variadic `sd_journal_send` is not callable from Swift.
/// All fields go into one buffer with explicit lengths, so values may contain anything,
/// including newlines (libsystemd then sends them in its binary-safe form).
enum JournalTransport {
    /// - Returns: 0, or `-errno`. libsystemd reports 0 as well when no journald listens
    ///   (it drops the entry on ENOENT), so 0 does not prove delivery.
    static func send(_ fields: [String]) -> Int32 {
        var buffer: [UInt8] = []
        var spans: [(offset: Int, length: Int)] = []
        buffer.reserveCapacity(fields.reduce(0) { $0 + $1.utf8.count })
        for field in fields {
            spans.append((buffer.count, field.utf8.count))
            buffer.append(contentsOf: field.utf8)
        }
        guard !spans.isEmpty else { return 0 }
        return buffer.withUnsafeMutableBytes { bytes in
            // A field of zero length still needs a valid pointer; the buffer is never empty
            // here because every field contains at least "NAME=".
            let base = bytes.baseAddress!
            let vectors = spans.map { iovec(iov_base: base + $0.offset, iov_len: $0.length) }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }
}
