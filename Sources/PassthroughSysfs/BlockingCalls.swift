import Synchronization

/// Where sysfs writes that wait for the kernel run: removing a device or unbinding a driver waits for the
/// driver's remove, a rescan or a probe for the driver's probe. The daemon gives these a thread of their
/// own, so its executor never stalls; tools and tests run them in place (``inline``).
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
