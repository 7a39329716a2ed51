#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import PassthroughCore
import PassthroughSystemd
import PassthroughThreads
import Synchronization
import SystemPackage

/// One connected request channel: the socket QEMU listens on for one domain, shared by the channel thread
/// (reading lines, writing answers) and whoever holds an answer closure. A class so the fd is closed once, by
/// `deinit`, when both are done with it: an answer that comes after the channel is gone goes to a socket that was
/// shut down, never to a reused fd number.
final class GuestChannelLink: Sendable {
    private struct State {
        /// A line was handed over and not answered yet: the thread reads nothing more meanwhile, so a guest has
        /// one request in flight and what it sends meanwhile waits in the socket (and, behind it, in QEMU).
        var awaitingAnswer = false
        /// Answer bytes the socket has not taken yet, and since when.
        var outbox: [UInt8] = []
        var outboxSince: ContinuousClock.Instant?
        /// The thread let go of the channel (closed by QEMU, failed, or hung up by the owner).
        var lost = false
    }

    let guest: GuestName
    let fd: CInt
    private let wakeup: Wakeup
    private let state = Mutex(State())

    init(guest: GuestName, fd: CInt, wakeup: Wakeup) {
        self.guest = guest
        self.fd = fd
        self.wakeup = wakeup
    }

    deinit {
        UnixSocket.close(fd)
    }

    /// Queues one answer line for the thread to write (never blocks the caller). Only the first answer to a
    /// handed-over line counts; later ones, and any after the channel is gone, are dropped.
    func answer(_ text: String) {
        let queued = state.withLock { state in
            guard state.awaitingAnswer, !state.lost else { return false }
            state.awaitingAnswer = false
            Self.queue(text, in: &state)
            return true
        }
        if queued { wakeup.nudge() }
    }

    /// For the thread: an answer of the transport's own (a line too long), which hands nothing over.
    func answerWithoutRequest(_ text: String) {
        state.withLock { Self.queue(text, in: &$0) }
    }

    /// For the thread, right before a line is handed over.
    func lineHandedOver() {
        state.withLock { $0.awaitingAnswer = true }
    }

    var isAwaitingAnswer: Bool { state.withLock { $0.awaitingAnswer } }
    var isLost: Bool { state.withLock { $0.lost } }

    /// For the thread: the bytes to send and since when they wait.
    var pendingOutput: (bytes: [UInt8], since: ContinuousClock.Instant)? {
        state.withLock { state in state.outboxSince.map { (state.outbox, $0) } }
    }

    /// For the thread: `count` bytes of the outbox went out.
    func sent(_ count: Int) {
        state.withLock { state in
            state.outbox.removeFirst(count)
            if state.outbox.isEmpty { state.outboxSince = nil }
        }
    }

    /// For the thread, when it lets go of the channel.
    func markLost() {
        state.withLock { $0.lost = true }
    }

    /// For the owner: the thread sees a hang-up and lets go; QEMU sees end of file.
    func hangUp() {
        _ = Glibc.shutdown(fd, CInt(SHUT_RDWR))
    }

    /// The answer as one line: a newline inside would end it early and desynchronise the guest's reader.
    private static func queue(_ text: String, in state: inout State) {
        var line = Array(text.utf8.prefix(GuestChannels.maximumAnswerBytes))
        for index in line.indices where line[index] == 0x0A || line[index] == 0x0D { line[index] = 0x20 }
        line.append(0x0A)
        state.outbox += line
        if state.outboxSince == nil { state.outboxSince = .now }
    }
}

/// What the channel thread needs; handed over with the thread's body.
final class GuestChannelThreadContext: Sendable {
    let wakeup: Wakeup
    let logger: Logger
    let requests: AsyncStream<GuestRequestLine>.Continuation
    /// Rung when a channel is lost, so the owner reconnects.
    let bell: AsyncStream<Void>.Continuation
    /// Links connected by the owner, not yet polled by the thread.
    private let inbox = Mutex<[GuestChannelLink]>([])

    init(wakeup: Wakeup, logger: Logger, requests: AsyncStream<GuestRequestLine>.Continuation,
         bell: AsyncStream<Void>.Continuation) {
        self.wakeup = wakeup
        self.logger = logger
        self.requests = requests
        self.bell = bell
    }

    /// For the owner: the thread polls `link` from its next wake-up.
    func adopt(_ link: GuestChannelLink) {
        inbox.withLock { $0.append(link) }
        wakeup.nudge()
    }

    func takeAdopted() -> [GuestChannelLink] {
        inbox.withLock { links in
            defer { links.removeAll() }
            return links
        }
    }
}

/// The body of the channel thread: it alone polls and reads every connected channel and writes the answers, so
/// no guest can block the agent's tasks or another guest. The limits that make a hung or flooding guest harmless:
/// - A line is at most ``GuestChannels/maximumLineBytes``; a longer one is answered `error bad-request line too
///   long` and skipped up to the next newline, keeping at most one line's worth of bytes buffered.
/// - One request in flight per guest (``GuestChannelLink``), so a guest cannot queue work or memory in the agent.
/// - At most ``readsPerWakeup`` reads per channel per wake-up, so a flood is served in turn with the others.
/// - An answer the guest does not take within ``GuestChannels/answerTimeout`` (no reader on the port: QEMU
///   stops reading the socket) costs the guest its connection, which the owner then re-opens, instead of a
///   half-written line in front of the next answer.
struct GuestChannelThread {
    static let readsPerWakeup = 4
    static let chunkBytes = 1024

    /// The thread's own view of one channel.
    private struct Channel {
        let link: GuestChannelLink
        var buffer: [UInt8] = []
        /// After a line too long: everything up to the next newline is dropped.
        var skippingToNewline = false
    }

    let context: GuestChannelThreadContext
    private var logger: Logger { context.logger }

    init(context: GuestChannelThreadContext) {
        self.context = context
    }

    func run() {
        var channels: [CInt: Channel] = [:]
        defer {
            for channel in channels.values { release(channel.link) }
            for link in context.takeAdopted() { release(link) }
            context.requests.finish()
        }
        while true {
            for link in context.takeAdopted() { channels[link.fd] = Channel(link: link) }
            let now = ContinuousClock.now
            var deadline: ContinuousClock.Instant?
            for fd in channels.keys.sorted() {
                if !flush(&channels[fd]!, now: now, deadline: &deadline) || !handOver(&channels[fd]!) {
                    drop(fd, from: &channels, reason: "")
                }
            }
            let order = channels.keys.sorted()
            var fds = [pollfd(fd: context.wakeup.descriptor, events: Int16(POLLIN), revents: 0)] + order.map { fd in
                let channel = channels[fd]!
                var events = channel.link.isAwaitingAnswer ? 0 : Int16(POLLIN)
                if channel.link.pendingOutput != nil { events |= Int16(POLLOUT) }
                return pollfd(fd: fd, events: events, revents: 0)
            }
            do throws(Errno) {
                try UnixSocket.call { poll(&fds, nfds_t(fds.count), Self.milliseconds(until: deadline)) }
            } catch {
                logger.critical("guest requests: poll failed, no more requests are read", metadata: ["error": "\(error)"])
                return
            }
            if fds[0].revents != 0, !context.wakeup.drain() { return }
            for entry in fds.dropFirst() where entry.revents != 0 {
                if entry.revents & Int16(POLLIN) != 0 {
                    guard read(&channels[entry.fd]!) else {
                        drop(entry.fd, from: &channels, reason: "closed by QEMU")
                        continue
                    }
                }
                if entry.revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 {
                    drop(entry.fd, from: &channels, reason: "hung up")
                }
            }
        }
    }

    // MARK: - Reading

    /// Reads what is there, a bounded amount. `false` at end of file or on an error: the channel is gone.
    private func read(_ channel: inout Channel) -> Bool {
        var chunk = [UInt8](repeating: 0, count: Self.chunkBytes)
        for _ in 0..<Self.readsPerWakeup {
            let count: Int
            do throws(Errno) {
                count = try UnixSocket.call { chunk.withUnsafeMutableBytes { recv(channel.link.fd, $0.baseAddress, $0.count, 0) } }
            } catch .wouldBlock {
                return true
            } catch {
                logger.info("guest requests: channel failed", metadata: [
                    LogMetadataKey.guest: "\(channel.link.guest)", "error": "\(error)",
                ])
                return false
            }
            if count == 0 { return false }
            frame(chunk[..<count], into: &channel)
            if channel.buffer.contains(0x0A) { return true }
        }
        return true
    }

    /// Appends `bytes` to the channel's buffer, dropping what belongs to a line too long.
    private func frame(_ bytes: ArraySlice<UInt8>, into channel: inout Channel) {
        var bytes = bytes
        if channel.skippingToNewline {
            guard let newline = bytes.firstIndex(of: 0x0A) else { return }
            channel.skippingToNewline = false
            bytes = bytes[(newline + 1)...]
        }
        channel.buffer += bytes
        let lineEnd = channel.buffer.firstIndex(of: 0x0A) ?? channel.buffer.endIndex
        guard lineEnd > GuestChannels.maximumLineBytes else { return }
        // Too long, finished or not: answer once, and skip the rest of it.
        channel.link.answerWithoutRequest(GuestChannels.lineTooLongAnswer)
        logger.warning("guest requests: a line too long, skipped", metadata: [
            LogMetadataKey.guest: "\(channel.link.guest)", "limit": "\(GuestChannels.maximumLineBytes)",
        ])
        if lineEnd < channel.buffer.endIndex {
            let rest = channel.buffer[(lineEnd + 1)...]
            channel.buffer = []
            frame(rest, into: &channel)
        } else {
            channel.buffer = []
            channel.skippingToNewline = true
        }
    }

    /// Hands the next complete line over when the guest has no request in flight. `false` when nobody consumes
    /// requests any more.
    private func handOver(_ channel: inout Channel) -> Bool {
        guard !channel.link.isAwaitingAnswer, let newline = channel.buffer.firstIndex(of: 0x0A) else { return true }
        let line = Array(channel.buffer[..<newline])
        channel.buffer.removeSubrange(...newline)
        let link = channel.link
        link.lineHandedOver()
        let request = GuestRequestLine(guest: link.guest, line: line) { link.answer($0) }
        if case .terminated = context.requests.yield(request) { return false }
        return true
    }

    // MARK: - Writing

    /// Writes what the socket takes of the pending answer. `false` when the guest has not taken it in time, or
    /// the socket failed; `deadline` becomes the earliest answer timeout.
    private func flush(_ channel: inout Channel, now: ContinuousClock.Instant, deadline: inout ContinuousClock.Instant?) -> Bool {
        guard let (bytes, since) = channel.link.pendingOutput else { return true }
        let link = channel.link
        do throws(Errno) {
            let count = try UnixSocket.call {
                bytes.withUnsafeBytes { send(link.fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            }
            link.sent(count)
            if count == bytes.count { return true }
        } catch .wouldBlock {
        } catch {
            logger.info("guest requests: cannot answer", metadata: [LogMetadataKey.guest: "\(link.guest)", "error": "\(error)"])
            return false
        }
        let giveUp = since + GuestChannels.answerTimeout
        if giveUp <= now {
            logger.warning("guest requests: the guest does not read its answers; reconnecting", metadata: [
                LogMetadataKey.guest: "\(link.guest)", "timeout": "\(GuestChannels.answerTimeout)",
            ])
            return false
        }
        deadline = min(deadline ?? giveUp, giveUp)
        return true
    }

    // MARK: - Letting go

    private func drop(_ fd: CInt, from channels: inout [CInt: Channel], reason: String) {
        guard let channel = channels.removeValue(forKey: fd) else { return }
        if !reason.isEmpty {
            logger.info("guest requests: channel \(reason)", metadata: [LogMetadataKey.guest: "\(channel.link.guest)"])
        }
        release(channel.link)
        context.bell.yield()
    }

    private func release(_ link: GuestChannelLink) {
        link.markLost()
        link.hangUp()
    }

    private static func milliseconds(until deadline: ContinuousClock.Instant?) -> CInt {
        guard let deadline else { return -1 }
        return UnixSocket.pollTimeout(deadline - .now)
    }
}
