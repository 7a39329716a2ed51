import Foundation

/// Runs blocking work (waiting for a child process, a socket) on a thread of its own, so it never
/// holds one of the few threads that run every other test's tasks.
public func onOwnThread<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Swift.Result { try body() })
        }.start()
    }
}

/// Runs `body` on a thread of its own and waits at most `limit`: `nil` if it has not returned by then.
///
/// For code that might never return (a parser caught in a loop): the test fails instead of hanging the
/// suite. A loop cannot be stopped from outside, so the thread keeps spinning until the test process ends.
public func onOwnThread<Result: Sendable>(
    within limit: Duration, _ body: @escaping @Sendable () -> Result
) async -> Result? {
    let first = FirstAnswer<Result?>()
    return await withCheckedContinuation { continuation in
        first.waiting(continuation)
        Thread { first.answer(body()) }.start()
        Thread {
            let (seconds, attoseconds) = limit.components
            Thread.sleep(forTimeInterval: Double(seconds) + Double(attoseconds) / 1e18)
            first.answer(nil)
        }.start()
    }
}

/// Resumes a continuation with whichever answer comes first; later ones are dropped.
private final class FirstAnswer<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Value, Never>?

    func waiting(_ continuation: CheckedContinuation<Value, Never>) {
        lock.withLock { self.continuation = continuation }
    }

    func answer(_ value: Value) {
        let waiting = lock.withLock {
            defer { continuation = nil }
            return continuation
        }
        waiting?.resume(returning: value)
    }
}
