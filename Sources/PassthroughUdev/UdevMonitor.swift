// The udev monitor's public face: the monitor, the events it delivers in order, and why it may resync.

internal import CUdev
import Glibc
import Logging
import PassthroughThreads
import Synchronization
import SystemPackage

/// Streams PCI uevents from udev, starting with a snapshot of the devices already present.
///
/// One dedicated pthread owns every libudev object for its whole life (libudev is
/// thread-confined). It polls the netlink socket and its shutdown ``Wakeup`` and yields
/// ``UdevMonitorEvent``s into an unbounded `AsyncStream`: a dropped hotplug event would be a
/// correctness bug. See ``UdevMonitorEvent`` for the order of events.
///
/// ```swift
/// let monitor = UdevMonitor(logger: logger)
/// for await event in try monitor.start() { ... }
/// monitor.shutdown()
/// ```
public final class UdevMonitor: Sendable {
    private enum State {
        case idle
        case running(thread: pthread_t, context: MonitorContext)
        /// `joinResult` is what `pthread_join` returned (0 = joined), `nil` if never started.
        case stopped(joinResult: CInt?)
    }

    private let logger: Logger
    private let state = Mutex<State>(.idle)

    public init(logger: Logger) {
        self.logger = logger
    }

    deinit {
        shutdown()
    }

    /// Subscribes to PCI uevents and starts the monitor thread.
    ///
    /// Returns once the subscription is in place (it blocks the caller for that socket setup
    /// only), so any change after the call returns is seen. Can be called once per monitor.
    /// Ending the iteration (cancelling the consuming task) stops the thread too; ``shutdown()``
    /// must still be called (or the monitor released) to join it.
    public func start() throws(UdevError) -> AsyncStream<UdevMonitorEvent> {
        try state.withLock { (state) throws(UdevError) -> AsyncStream<UdevMonitorEvent> in
            guard case .idle = state else { throw UdevError(.alreadyStarted) }

            let wakeup: Wakeup
            do throws(Errno) {
                wakeup = try Wakeup()
            } catch {
                throw UdevError(.eventFD, errno: error)
            }
            let (stream, continuation) = AsyncStream.makeStream(
                of: UdevMonitorEvent.self, bufferingPolicy: .unbounded)
            // Runs at most once: on cancellation by the consumer (which wakes the thread), or on
            // the thread's own `finish()`. The closure keeps the wake-up alive while it may run.
            continuation.onTermination = { _ in wakeup.shutdown() }
            let context = MonitorContext(logger: logger, continuation: continuation, wakeup: wakeup)

            let thread: pthread_t
            do throws(UdevError) {
                thread = try Self.spawn(context)
            } catch {
                continuation.finish()
                throw error
            }

            if case .failure(let error) = context.waitForStartup() {
                _ = pthread_join(thread, nil)
                throw error
            }
            state = .running(thread: thread, context: context)
            return stream
        }
    }

    /// Stops the monitor thread and waits for it to exit; the stream then finishes.
    ///
    /// Idempotent and safe from any thread except from inside a libudev callback (there are none).
    /// After it returns, the thread has been joined and every libudev object freed.
    public func shutdown() {
        state.withLock { state in
            switch state {
            case .idle:
                state = .stopped(joinResult: nil)
            case .stopped:
                return
            case .running(let thread, let context):
                context.wakeup.shutdown()
                // The monitor thread never takes `state`, so joining under the lock cannot
                // deadlock, and a concurrent second `shutdown()` returns only after the join.
                let joinResult = pthread_join(thread, nil)
                if joinResult != 0 {
                    logger.error("joining the udev monitor thread failed", metadata: ["rc": "\(joinResult)"])
                }
                state = .stopped(joinResult: joinResult)
            }
        }
    }

    /// For tests: `pthread_join`'s result once shut down, `nil` while running or never started.
    var joinResult: CInt? {
        state.withLock { state in
            if case .stopped(let joinResult) = state { return joinResult }
            return nil
        }
    }

    private static func spawn(_ context: MonitorContext) throws(UdevError) -> pthread_t {
        do {
            return try ThreadSpawn.start { MonitorThread<UdevSession>.run(context) }
        } catch {
            throw UdevError(.threadStart, errno: error)
        }
    }
}

/// What ``UdevMonitor`` delivers, in order.
///
/// The sequence is: one coldplug snapshot (`device` events with `isColdplug == true`, then
/// `coldplugComplete`), then hotplug `device` events as they happen. Events that arrive while the
/// snapshot is taken are delivered after it, so a device may show up twice; treat events as
/// idempotent state updates.
///
/// When the monitor loses track while listening (socket overflow, a receive error, or a uevent it
/// cannot decode) it sends `resync` and then a fresh snapshot ending in another
/// `coldplugComplete`. A `resync` raised *during* a snapshot (an existing device that cannot be
/// decoded) starts no further snapshot.
public enum UdevMonitorEvent: Hashable, Sendable {
    case device(UdevEvent)
    /// The end of a snapshot; `count` is the number of `device` events it produced.
    case coldplugComplete(count: Int)
    /// The picture may be incomplete; the reason was also logged.
    case resync(UdevResyncReason)
    /// The monitor cannot go on; this is the last event before the stream finishes.
    case failed(UdevError)
}

/// Why the monitor's picture of the PCI bus may have a hole in it.
public enum UdevResyncReason: Hashable, Sendable, CustomStringConvertible {
    /// The netlink socket overflowed (`ENOBUFS`): the kernel dropped uevents.
    case receiveBufferOverflow
    /// Receiving a uevent failed for another reason.
    case receiveFailed(Errno)
    /// A device reached the monitor but could not be decoded.
    case unparsableDevice(UdevParseError)

    public var description: String {
        switch self {
        case .receiveBufferOverflow: "udev receive buffer overflow (ENOBUFS), events were lost"
        case .receiveFailed(let errno): "receiving a uevent failed: \(errno)"
        case .unparsableDevice(let error): "unparsable device: \(error)"
        }
    }
}
