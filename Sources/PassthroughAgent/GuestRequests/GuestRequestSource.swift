import PassthroughCore

/// One line a guest sent over its request channel, and the way to answer it.
///
/// The channel a line arrives on names the domain: a guest cannot claim to be another one. The line is
/// raw bytes, undecoded (the decoder, not the transport, decides what is a request).
package struct GuestRequestLine: Sendable {
    /// The domain whose channel carried the line.
    package let guest: GuestName
    package let line: [UInt8]
    /// Sends one answer line (a newline is appended) back on the same channel; later calls are ignored
    /// once the channel is gone. Answer every line exactly once: a guest has one request in flight, and its
    /// next line is read only after this answer (a second answer to the same line is dropped).
    package let answer: @Sendable (String) -> Void

    package init(guest: GuestName, line: [UInt8], answer: @escaping @Sendable (String) -> Void) {
        self.guest = guest
        self.line = line
        self.answer = answer
    }
}

/// Where guest requests come from: the transport (virtio-serial channels, one per domain).
///
/// Level-triggered like the rest of the agent: the supervisor says which guests should be listened to,
/// whenever that may have changed; the source connects, hot-adds a missing channel, reconnects after a
/// guest or libvirtd restart, and drops guests no longer named.
package protocol GuestRequestSource: Sendable {
    /// Every line from every watched guest, in arrival order per guest.
    var requests: AsyncStream<GuestRequestLine> { get }
    /// The running guests that lend a card with `guest-requests = true`; replaces the previous set.
    func watch(_ guests: Set<GuestName>) async
}
