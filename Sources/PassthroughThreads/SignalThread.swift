import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Signals delivered as an `AsyncStream`, received by a thread of our own in `sigwait(3)`.
///
/// The signals are blocked in the creating thread first, so every thread started afterwards (udev,
/// libvirt, workers) inherits the mask and only `sigwait` ever sees them: no handler runs at an arbitrary
/// point, and libdispatch's signal sources (and the thread pool they bring) are not needed. Create it on
/// the main thread before any other thread exists. The thread lives as long as the process.
public struct SignalThread: Sendable {
    public let signals: AsyncStream<Int32>

    public init(handling numbers: [Int32]) throws(Errno) {
        var set = sigset_t()
        sigemptyset(&set)
        for number in numbers { sigaddset(&set, number) }
        let rc = pthread_sigmask(SIG_BLOCK, &set, nil)
        guard rc == 0 else { throw Errno(rawValue: rc) }

        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        let receiver = SignalReceiver(set: set, continuation: continuation)
        let thread = try ThreadSpawn.start { receiver.receive() }
        pthread_detach(thread)
        signals = stream
    }
}

private final class SignalReceiver: @unchecked Sendable {
    // Written once in init, then only read by the signal thread.
    private var set: sigset_t
    private let continuation: AsyncStream<Int32>.Continuation

    init(set: sigset_t, continuation: AsyncStream<Int32>.Continuation) {
        self.set = set
        self.continuation = continuation
    }

    func receive() {
        while true {
            var number: Int32 = 0
            guard sigwait(&set, &number) == 0 else { continue }
            continuation.yield(number)
        }
    }
}
