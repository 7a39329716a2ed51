// The threads the agent starts: the spawn every one of them goes through, the worker threads that run
// blocking calls, and the seam through which callers hand such a call over.

import Dispatch
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A pthread of its own that runs blocking calls one at a time, in order — or a few that share one queue.
///
/// Blocking a thread of Swift's cooperative pool (or of a dispatch queue) makes libdispatch's Linux
/// workqueue monitor believe the pool is stalled, and it starts more threads; each one costs a stack and
/// a malloc arena, and a daemon that does this on every reflash grows. A kernel write that waits for a
/// driver's probe, or a libvirt RPC that waits for QEMU, belongs on a thread that may block.
///
/// With one thread, calls run in submission order. With several, they start in submission order on
/// whichever thread is free, so a slow call (a driver's remove, an attach waiting for QEMU) holds up only
/// its own caller. Either way a call runs wholly on one thread, so per-thread state such as libvirt's last
/// error can be read inside the call that caused it.
public final class WorkerThread: Sendable {
    /// A call submitted after ``stop()``.
    public struct Stopped: Error, CustomStringConvertible {
        public let name: String
        public var description: String { "worker thread \(name) has stopped" }
    }

    private typealias Job = @Sendable () -> Void

    private struct State {
        var queued: [Job] = []
        var stopRequested = false
    }

    public let name: String
    private let state = Mutex(State())
    /// One signal per queued call, and one for the stop request.
    private let wakeups = DispatchSemaphore(value: 0)
    private let handles = Mutex<[pthread_t]>([])

    /// Starts the threads, `threads` of them (at least one). `name` shows in `ps -L` and `top -H` (the kernel
    /// keeps 15 bytes of it).
    public init(name: String, threads: Int = 1) throws(Errno) {
        self.name = name
        // The threads keep the worker alive until ``stop()`` ends them. One that cannot start after the first
        // leaves the rest to carry the calls: fewer in parallel, none lost.
        for index in 0..<max(threads, 1) {
            do {
                let thread = try ThreadSpawn.start { [self] in serve() }
                handles.withLock { $0.append(thread) }
            } catch where index > 0 {
                break
            }
        }
    }

    /// Runs `body` on the worker thread and resumes the caller with its result.
    public func perform<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            let accepted = state.withLock { state -> Bool in
                guard !state.stopRequested else { return false }
                state.queued.append { continuation.resume(with: Swift.Result { try body() }) }
                return true
            }
            if accepted {
                wakeups.signal()
            } else {
                continuation.resume(throwing: Stopped(name: name))
            }
        }
    }

    /// Lets the calls already queued finish, then ends the threads and waits for them (except the one it is
    /// called on). Later calls throw ``Stopped``.
    public func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopRequested = true }
            return !state.stopRequested
        }
        guard first else { return }
        wakeups.signal()
        for thread in handles.withLock({ $0 }) {
            if pthread_equal(thread, pthread_self()) == 0 {
                pthread_join(thread, nil)
            } else {
                pthread_detach(thread)
            }
        }
    }

    private func serve() {
        nameThisThread()
        while true {
            wakeups.wait()
            let (job, stopRequested) = state.withLock { state in
                (state.queued.isEmpty ? nil : state.queued.removeFirst(), state.stopRequested)
            }
            if let job {
                job()
            } else if stopRequested {
                wakeups.signal()  // the stop's one signal, passed on to the next thread
                return
            }
        }
    }

    /// What `pthread_setname_np` does (Glibc's module map leaves that GNU extension out): the kernel's
    /// per-thread `comm`, 15 bytes at most.
    private func nameThisThread() {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}

/// Where calls that wait for the kernel run: removing a device or unbinding a driver waits for the driver's
/// remove, a rescan or a probe for the driver's probe. The daemon runs them on a ``WorkerThread``, so its
/// executor never stalls; tools and tests run them in place (``inline``).
public struct BlockingCalls: Sendable {
    public typealias Runner = @Sendable (_ call: @escaping @Sendable () -> Void) async -> Void

    private let runner: Runner

    /// `runner` must run `call` exactly once and return after it has.
    public init(_ runner: @escaping Runner) {
        self.runner = runner
    }

    public static let inline = BlockingCalls { call in call() }

    public func run<Value: Sendable, Failure: Error>(
        _ call: @escaping @Sendable () throws(Failure) -> Value
    ) async throws(Failure) -> Value {
        let outcome = Mutex<Result<Value, Failure>?>(nil)
        await runner {
            let result = Result { () throws(Failure) -> Value in try call() }
            outcome.withLock { $0 = result }
        }
        guard let result = outcome.withLock({ $0 }) else {
            preconditionFailure("a BlockingCalls runner returned without running the call")
        }
        return try result.get()
    }
}

/// A pthread running `body`, which the thread owns until it returns: every thread of the agent starts here.
public enum ThreadSpawn {
    private final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    public static func start(_ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw Errno(rawValue: rc)
        }
        return thread
    }
}
