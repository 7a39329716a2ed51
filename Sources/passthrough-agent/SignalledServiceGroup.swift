import PassthroughThreads
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// A service group run the way the long-running commands want it: SIGTERM and SIGINT shut it down
/// gracefully (the step in flight finishes); SIGHUP calls `onHangup`, or shuts down too when there is
/// none (a terminal that closes under `monitor`).
///
/// Create it first thing in the command, before any other thread exists: ``SignalThread`` blocks the
/// signals in the calling thread so that every thread started afterwards inherits the mask.
struct SignalledServiceGroup {
    private let signals: AsyncStream<Int32>

    init() throws {
        signals = try SignalThread(handling: [SIGTERM, SIGINT, SIGHUP]).signals
    }

    func run(_ group: ServiceGroup, onHangup: (@Sendable () -> Void)? = nil) async throws {
        let signals = signals
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await signal in signals {
                    if signal == SIGHUP, let onHangup {
                        onHangup()
                    } else {
                        await group.triggerGracefulShutdown()
                    }
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}
