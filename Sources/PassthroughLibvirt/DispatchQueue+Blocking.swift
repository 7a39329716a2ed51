import Dispatch

extension DispatchQueue {
    /// Runs blocking `body` on this queue and resumes the caller with its result.
    ///
    /// Keeps blocking libvirt calls off Swift's cooperative pool, and keeps each call and the read of its
    /// per-thread error inside one work item, hence on one thread.
    func perform<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            self.async { continuation.resume(with: Swift.Result { try body() }) }
        }
    }
}
