internal import CLibvirt
import PassthroughThreads
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// libvirt's default event loop, run on a dedicated thread of its own.
///
/// Process-wide because libvirt's is: `virEventRegisterDefaultImpl` may run only once, before any connection.
/// Every libvirt callback (domain events, close, keepalive) runs on this thread while it is running.
public final class LibvirtEventLoop: Sendable {
    public static let shared = LibvirtEventLoop()

    /// The stop timer stays disabled until `stop()` fires it: an idle agent must not wake up
    /// (the loop sleeps in poll until libvirt has something, or until we ask it to return).
    private static let disabled: Int32 = -1

    private struct State {
        var registered = false
        var timer: Int32?
        var running: (thread: pthread_t, control: LoopControl)?
    }

    private let state = Mutex(State())

    private init() {}

    /// Registers the implementation (first time only) and starts the loop thread if it is not running.
    public func start() throws(LibvirtError) {
        try state.withLock { (state) throws(LibvirtError) -> Void in
            guard state.running == nil else { return }
            if !state.registered {
                // libvirt otherwise prints every error to stderr, including ones the caller handles.
                virSetErrorFunc(nil, { _, _ in })
                guard virEventRegisterDefaultImpl() == 0 else {
                    throw LibvirtError.last(operation: "virEventRegisterDefaultImpl")
                }
                state.registered = true
            }
            if let timer = state.timer {
                virEventUpdateTimeout(timer, Self.disabled)
            } else {
                let timer = virEventAddTimeout(Self.disabled, { _, _ in }, nil, nil)
                guard timer >= 0 else { throw LibvirtError.last(operation: "virEventAddTimeout") }
                state.timer = timer
            }
            let control = LoopControl()
            state.running = (try control.spawn(), control)
        }
    }

    /// Stops the loop thread and waits for it, so no callback runs after this returns.
    ///
    /// Close connections first and give late callbacks a moment: libvirt may still dispatch a few after a close.
    /// Must not be called from a libvirt callback (the loop thread cannot wait for itself).
    public func stop() {
        let stopping = state.withLock { state -> (thread: pthread_t, control: LoopControl, timer: Int32?)? in
            guard let running = state.running else { return nil }
            state.running = nil
            return (running.thread, running.control, state.timer)
        }
        guard let stopping else { return }
        stopping.control.stopRequested.store(true, ordering: .releasing)
        // Fire the timer now: the loop returns from its current iteration and sees the request.
        if let timer = stopping.timer { virEventUpdateTimeout(timer, 0) }
        if pthread_equal(pthread_self(), stopping.thread) == 0 {
            pthread_join(stopping.thread, nil)
        }
    }

    public var isRunning: Bool { state.withLock { $0.running != nil } }
}

/// One run of the loop thread; shared between the starter and the thread.
private final class LoopControl: Sendable {
    let stopRequested = Atomic<Bool>(false)

    func spawn() throws(LibvirtError) -> pthread_t {
        do {
            return try ThreadSpawn.start { [self] in run() }
        } catch {
            throw LibvirtError.threadStart(errno: error, what: "the event-loop thread")
        }
    }

    private func run() {
        while !stopRequested.load(ordering: .acquiring) {
            if virEventRunDefaultImpl() < 0 {
                // Nothing to report it to from here; pause so a persistent failure cannot spin a core.
                virResetLastError()
                usleep(100_000)
            }
        }
    }
}
