#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import PassthroughCore
import PassthroughLibvirt
import PassthroughSystemd
import PassthroughThreads
import SystemPackage

/// The real ``GuestRequestSource``: one virtio-serial channel (`org.passthrough-agent.0`) per watched guest.
///
/// Why this transport: QEMU listens on a unix socket per domain (`<channel type='unix'><source mode='bind'/>`) and
/// the agent connects to it, so the socket a line arrives on names the domain (a guest cannot speak for another)
/// and the unit needs no address family beyond AF_UNIX; the guest sees a character device (`/dev/vportNpM`) that
/// `echo` and `cat` can use. libvirt hands the socket to QEMU's user, so connecting takes `CAP_DAC_OVERRIDE` (the
/// unit says why it grants it). The socket lives under libvirt's channel directory on `/var`, which the unit mounts
/// read-only (`ProtectSystem=strict`), and connecting still works: `connect()` asks only for write permission on
/// the socket inode (`unix_find_bsd` in net/unix/af_unix.c calls `path_permission(&path, MAY_WRITE)` and never
/// `mnt_want_write`), and the read-only check in `sb_permission` (fs/namei.c) returns `EROFS` only for regular
/// files, directories and symlinks, never for a socket.
///
/// Two halves: this actor decides which guests to connect (the path comes from the live XML; a missing channel is
/// hot-added to the live definition, then the XML is read again) and reconnects with ``Backoff`` after a failure
/// or a loss (QEMU closing the socket when the guest stops; libvirtd restarting only delays the next look-up);
/// one dedicated thread (``GuestChannelThread``) does all the socket I/O, so no guest can block the agent.
///
/// ```swift
/// let channels = try GuestChannels(hypervisor: hypervisor, logger: logger)
/// group.addTask { try await channels.run() }          // until cancelled: it does the connecting
/// await channels.watch([guest])                        // whenever the set may have changed; returns at once
/// for await request in channels.requests { … request.answer("ok") }
/// ```
package actor GuestChannels: GuestRequestSource {
    /// The longest request line, newline excluded.
    package static let maximumLineBytes = 256
    /// The longest answer line (longer ones are cut).
    static let maximumAnswerBytes = 1024
    /// How long an answer may wait for a guest that does not read it.
    static let answerTimeout = Duration.seconds(2)
    static let lineTooLongAnswer = "error bad-request line too long"

    package nonisolated let requests: AsyncStream<GuestRequestLine>

    private struct Watched {
        var link: GuestChannelLink?
        /// Failed attempts (and losses) since the last connection; drives the backoff.
        var failures = 0
        var retryAt = ContinuousClock.now
        var connecting = false
        /// The last failure logged as a warning, so a long outage is not logged every attempt.
        var lastProblem: String?
    }

    private let hypervisor: any Hypervisor
    private let backoff: Backoff
    private let logger: Logger
    private let wakeup: Wakeup
    private let context: GuestChannelThreadContext
    private let bell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation
    private var watched: [GuestName: Watched] = [:]
    private var hasRun = false

    package init(hypervisor: any Hypervisor, backoff: Backoff = .standard, logger: Logger) throws(Errno) {
        self.hypervisor = hypervisor
        self.backoff = backoff
        self.logger = logger
        wakeup = try Wakeup()
        let (requests, output) = AsyncStream.makeStream(of: GuestRequestLine.self, bufferingPolicy: .unbounded)
        self.requests = requests
        // One pending ring is as good as many: the loop looks at every guest when it wakes.
        (bell, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        context = GuestChannelThreadContext(wakeup: wakeup, logger: logger, requests: output, bell: ring)
    }

    /// Starts the channel thread, connects newly watched guests and reconnects lost or failed channels when due,
    /// until the calling task is cancelled; then hangs every channel up and finishes ``requests``. Call once.
    package func run() async throws(Errno) {
        precondition(!hasRun, "GuestChannels.run() may only be called once")
        hasRun = true
        let body = GuestChannelThread(context: context)
        let thread = try ThreadSpawn.start { body.run() }
        let wakeup = wakeup
        var rung = bell.makeAsyncIterator()
        await withTaskCancellationHandler {
            while !Task.isCancelled {
                await reconnectDue()
                let timer = nextRetry().map { instant in
                    Task { [ring] in
                        try? await Task.sleep(until: instant)
                        ring.yield()
                    }
                }
                _ = await rung.next(isolation: self)
                timer?.cancel()
            }
        } onCancel: {
            wakeup.shutdown()
        }
        wakeup.shutdown()
        _ = pthread_join(thread, nil)
        for entry in watched.values { entry.link?.hangUp() }
        watched.removeAll()
    }

    /// Returns at once: connecting (libvirt calls that may hang while libvirtd does) is ``run()``'s, so the caller
    /// never waits on libvirt or a guest. A guest no longer named is hung up here.
    package func watch(_ guests: Set<GuestName>) async {
        for (guest, entry) in watched where !guests.contains(guest) {
            entry.link?.hangUp()
            watched[guest] = nil
            logger.info("guest requests: no longer listening to this guest", metadata: [LogMetadataKey.guest: "\(guest)"])
        }
        for guest in guests where watched[guest] == nil {
            watched[guest] = Watched()
        }
        ring.yield()
    }

    /// The guests currently connected (for status and tests).
    package var connectedGuests: Set<GuestName> {
        Set(watched.filter { $0.value.link.map { !$0.isLost } ?? false }.keys)
    }

    // MARK: - Connecting

    /// Notices lost channels and connects every guest without one whose retry is due.
    private func reconnectDue() async {
        let now = ContinuousClock.now
        for guest in watched.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            guard var entry = watched[guest] else { continue }
            if let link = entry.link, link.isLost {
                // A loss counts as the first failure: a QEMU that accepts and drops at once is not hammered.
                entry.link = nil
                entry.failures = 1
                entry.retryAt = now + backoff.delay(afterFailures: 1)
                watched[guest] = entry
                logger.info("guest requests: channel lost; reconnecting", metadata: [
                    LogMetadataKey.guest: "\(guest)", "retry-in": "\(backoff.delay(afterFailures: 1))",
                ])
            }
            guard entry.link == nil, !entry.connecting, entry.retryAt <= now else { continue }
            watched[guest]?.connecting = true
            let result: Result<GuestChannelLink, any Error>
            do {
                result = .success(try await connect(guest))
            } catch {
                result = .failure(error)
            }
            // Awaited: the guest may have been unwatched meanwhile.
            guard var current = watched[guest] else {
                if case .success(let link) = result { link.hangUp() }
                continue
            }
            current.connecting = false
            switch result {
            case .success(let link):
                if current.failures > 0 {
                    logger.notice("guest requests: channel connected again", metadata: [
                        LogMetadataKey.guest: "\(guest)", "failures": "\(current.failures)",
                    ])
                } else {
                    logger.info("guest requests: channel connected", metadata: [LogMetadataKey.guest: "\(guest)"])
                }
                current = Watched(link: link)
                context.adopt(link)
            case .failure(let error):
                current.failures += 1
                let delay = backoff.delay(afterFailures: current.failures)
                current.retryAt = .now + delay
                let problem = "\(error)"
                let metadata: Logger.Metadata = [
                    LogMetadataKey.guest: "\(guest)", "error": "\(problem)", "failures": "\(current.failures)",
                    "retry-in": "\(delay)",
                ]
                if problem != current.lastProblem {
                    logger.warning("guest requests: cannot connect the channel", metadata: metadata)
                    current.lastProblem = problem
                } else {
                    logger.debug("guest requests: cannot connect the channel", metadata: metadata)
                }
            }
            watched[guest] = current
        }
    }

    /// The channel's socket from the live XML, hot-adding the channel first when the definition has none.
    private func connect(_ guest: GuestName) async throws -> GuestChannelLink {
        var channel = try await hypervisor.requestChannel(of: guest)
        if channel == .absent {
            logger.notice("guest requests: hot-adding the request channel to the live definition", metadata: [
                LogMetadataKey.guest: "\(guest)", "device": "\(GuestRequestChannel.deviceXML)",
            ])
            try await hypervisor.addRequestChannel(to: guest)
            channel = try await hypervisor.requestChannel(of: guest)
        }
        switch channel {
        case .listening(let path):
            return GuestChannelLink(guest: guest, fd: try Self.connectSocket(FilePath(path)), wakeup: wakeup)
        case .absent:
            throw GuestChannelFailure("the live definition still has no \(GuestRequestChannel.portName) channel after the hot-add")
        case .unusable(let reason):
            throw GuestChannelFailure("its \(GuestRequestChannel.portName) channel cannot be used: \(reason)")
        }
    }

    /// A non-blocking connect to QEMU's listening socket: it completes at once or fails (a full backlog is
    /// `EAGAIN`), so the actor never waits on a guest.
    private static func connectSocket(_ path: FilePath) throws -> CInt {
        let fd = try UnixSocket.streamSocket()
        let outcome: Errno?? = {
            do throws(Errno) { try UnixSocket.makeNonBlockingCloseOnExec(fd) } catch { return .some(error) }
            return UnixSocket.withAddress(path) { address, length in
                Glibc.connect(fd, address, length) == 0 ? nil : Errno(rawValue: errno)
            }
        }()
        switch outcome {
        case .some(nil):
            return fd
        case .some(let error?):
            UnixSocket.close(fd)
            // libvirt hands the socket to QEMU's user (mode 0775): connecting needs write permission on it, which
            // root has only with CAP_DAC_OVERRIDE (the unit grants it; a drop-in may have narrowed the set).
            let hint = error == .permissionDenied
                ? " (the socket is QEMU's user's; connecting needs CAP_DAC_OVERRIDE in the unit's CapabilityBoundingSet=)" : ""
            throw GuestChannelFailure("connect \(path): \(error)\(hint)")
        case nil:
            UnixSocket.close(fd)
            throw GuestChannelFailure("the socket path does not fit in sun_path: \(path)")
        }
    }

    /// The earliest retry of a guest without a channel.
    private func nextRetry() -> ContinuousClock.Instant? {
        watched.values.filter { $0.link == nil && !$0.connecting }.map(\.retryAt).min()
    }
}

/// Why a guest's channel could not be connected (for the log).
struct GuestChannelFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
