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
