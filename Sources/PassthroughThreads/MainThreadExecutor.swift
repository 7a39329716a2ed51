#if compiler(>=6.3)
@_spi(ExperimentalCustomExecutors) @_spi(ExperimentalScheduling) import _Concurrency
#endif
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Swift concurrency's global and main-actor executor for this process: one loop on the main thread.
///
/// On Linux the default global executor is libdispatch, whose thread-pool monitor wakes the process once a
/// second for as long as it lives, and which answers a blocked worker by starting another thread. A daemon
/// that mostly waits wants neither: it should sleep until a uevent, a libvirt event or one of its own
/// timers. Installed before the first task (``installAsGlobalExecutor()``), this loop runs every job on
/// the main thread in FIFO order, sleeps in `poll(2)` on its ``Wakeup`` with the nearest timer as the timeout,
/// and never touches libdispatch's pool. Work that blocks belongs on a ``WorkerThread``.
///
/// It is the main actor's executor; ``global`` is the default (nonisolated) one; both feed the same loop.
/// The mechanism is Swift 6.3's executor factory (the custom main and global executors proposal, still behind
/// an SPI), as JavaScriptKit uses it; `_createExecutors` must run before the first task exists.
public final class MainThreadExecutor: SerialExecutor, Sendable {
    public static let shared = MainThreadExecutor()

    private struct Entry {
        let job: UnownedJob
        /// Enqueued for the main actor rather than as global work.
        let isMain: Bool
    }

    private struct Timer {
        let deadline: UInt64
        let sequence: UInt64
        let entry: Entry

        func fires(before other: Timer) -> Bool {
            (deadline, sequence) < (other.deadline, other.sequence)
        }
    }

    private struct State {
        var ready: [Entry] = []
        var timers = TimerHeap()
        var sequence: UInt64 = 0
        /// The loop is in (or about to enter) poll and must be woken for new work.
        var sleeping = false

        /// True if the loop is asleep and this caller is the one to wake it.
        mutating func takeSleeper() -> Bool {
            defer { sleeping = false }
            return sleeping
        }
    }

    /// A binary min-heap on (deadline, submission order).
    private struct TimerHeap {
        private(set) var items: [Timer] = []

        var first: Timer? { items.first }

        mutating func insert(_ timer: Timer) {
            items.append(timer)
            var child = items.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard items[child].fires(before: items[parent]) else { break }
                items.swapAt(child, parent)
                child = parent
            }
        }

        mutating func popFirst() -> Timer? {
            guard !items.isEmpty else { return nil }
            items.swapAt(0, items.count - 1)
            let first = items.removeLast()
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count, items[left].fires(before: items[smallest]) { smallest = left }
                if right < items.count, items[right].fires(before: items[smallest]) { smallest = right }
                guard smallest != parent else { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
            return first
        }
    }

    private let state = Mutex(State())
    private let wakeup: Wakeup
    private let installed = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)

    private init() {
        do {
            wakeup = try Wakeup()
        } catch {
            preconditionFailure("eventfd failed (\(error)): the process cannot run its executor")
        }
    }

    // MARK: Installing and running

    /// The executor for nonisolated work: the same loop, jobs run without actor isolation.
    public let global = GlobalExecutor()

    /// Makes this loop the process's main and default executor. Call once, before any task is created,
    /// then call ``run()`` on the main thread. False where the toolchain (before Swift 6.3) cannot: the
    /// caller then keeps libdispatch.
    @discardableResult
    public func installAsGlobalExecutor() -> Bool {
        #if compiler(>=6.3)
        guard !installed.exchange(true, ordering: .acquiringAndReleasing) else { return true }
        _createExecutors(factory: MainThreadExecutorFactory.self)
        return true
        #else
        return false
        #endif
    }

    /// Runs jobs until ``stop()``. On the main thread only.
    public func run() {
        while !stopRequested.load(ordering: .acquiring) {
            let (batch, timeout) = state.withLock { state -> ([Entry], Int32) in
                let now = Self.monotonicNow()
                while let timer = state.timers.first, timer.deadline <= now {
                    state.ready.append(state.timers.popFirst()!.entry)
                }
                if !state.ready.isEmpty {
                    defer { state.ready.removeAll(keepingCapacity: true) }
                    return (state.ready, 0)
                }
                state.sleeping = true
                guard let next = state.timers.first else { return ([], -1) }
                // Rounded up: waking a millisecond late is fine, waking early only to sleep again is not.
                return ([], Int32(clamping: (next.deadline - now + 999_999) / 1_000_000))
            }
            if batch.isEmpty {
                sleep(timeoutMilliseconds: timeout)
                continue
            }
            for entry in batch {
                if entry.isMain {
                    entry.job.runSynchronously(on: asUnownedSerialExecutor())
                } else {
                    entry.job.runSynchronously(on: global.asUnownedTaskExecutor())
                }
            }
        }
    }

    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wakeup.nudge()
    }

    // MARK: Main executor

    public func enqueue(_ job: consuming ExecutorJob) {
        submit(UnownedJob(job), isMain: true)
    }

    public func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        submit(UnownedJob(job), after: delay, isMain: true)
    }

    // MARK: Queueing

    fileprivate func submit<D: DurationProtocol>(_ job: UnownedJob, after delay: D, isMain: Bool) {
        // Task.sleep passes Swift.Duration for the standard clocks; anything else runs now.
        let nanoseconds: UInt64
        if let delay = delay as? Duration, delay > .zero {
            let (seconds, attoseconds) = delay.components
            nanoseconds = UInt64(clamping: seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
        } else {
            nanoseconds = 0
        }
        submit(job, at: Self.monotonicNow() &+ nanoseconds, isMain: isMain)
    }

    fileprivate func submit(_ job: UnownedJob, isMain: Bool) {
        let wake = state.withLock { state in
            state.ready.append(Entry(job: job, isMain: isMain))
            return state.takeSleeper()
        }
        if wake { wakeup.nudge() }
    }

    private func submit(_ job: UnownedJob, at deadline: UInt64, isMain: Bool) {
        let wake = state.withLock { state in
            state.sequence &+= 1
            state.timers.insert(Timer(deadline: deadline, sequence: state.sequence, entry: Entry(job: job, isMain: isMain)))
            return state.takeSleeper()
        }
        if wake { wakeup.nudge() }
    }

    private func sleep(timeoutMilliseconds timeout: Int32) {
        var descriptor = pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)
        // EINTR: look again, like a timeout. The loop never shuts its wake-up down: it stops on a flag.
        if poll(&descriptor, 1, timeout) > 0 { _ = wakeup.drain() }
        state.withLock { $0.sleeping = false }
    }

    // MARK: Clocks

    static func monotonicNow() -> UInt64 { now(CLOCK_MONOTONIC) }

    static func now(_ clock: clockid_t) -> UInt64 {
        var time = timespec()
        clock_gettime(clock, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}

extension MainThreadExecutor {
    /// Nonisolated work on the main thread's loop.
    public final class GlobalExecutor: TaskExecutor, Sendable {
        fileprivate init() {}

        public func enqueue(_ job: consuming ExecutorJob) {
            MainThreadExecutor.shared.submit(UnownedJob(job), isMain: false)
        }

        public func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
            MainThreadExecutor.shared.submit(UnownedJob(job), after: delay, isMain: false)
        }
    }
}

#if compiler(>=6.3)
// The protocols are still SPI in Swift 6.3: the conformances are declared apart.
@_spi(ExperimentalCustomExecutors) extension MainThreadExecutor: MainExecutor {}
@_spi(ExperimentalScheduling) extension MainThreadExecutor: SchedulingExecutor {}
@_spi(ExperimentalScheduling) extension MainThreadExecutor.GlobalExecutor: SchedulingExecutor {}

/// What `_createExecutors` asks for.
private enum MainThreadExecutorFactory: ExecutorFactory {
    static var mainExecutor: any MainExecutor { MainThreadExecutor.shared }
    static var defaultExecutor: any TaskExecutor { MainThreadExecutor.shared.global }
}
#endif

/// Time as the agent's parts that wait see it (recovery, the link watch, reflash coordination, guest-request rate
/// limits, the metrics writer, the supervisor), injectable so tests run a 60 s timeout instantly. It lives beside the
/// loop that runs their sleeps.
public protocol WaitClock: Sendable {
    /// Time since an arbitrary fixed point; only differences matter.
    func now() -> Duration
    /// Throws `CancellationError` when the task is cancelled.
    func sleep(for duration: Duration) async throws
}

/// The real, monotonic clock (not wall time: an NTP step must not cut a recovery short).
public struct ContinuousWaitClock: WaitClock {
    private let origin = ContinuousClock.now

    public init() {}

    public func now() -> Duration { ContinuousClock.now - origin }

    public func sleep(for duration: Duration) async throws {
        try await Task.sleep(for: duration, clock: .continuous)
    }
}
