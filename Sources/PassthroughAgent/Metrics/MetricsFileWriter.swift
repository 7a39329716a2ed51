import Logging
import PassthroughThreads
import SystemPackage

/// Keeps node_exporter's textfile (`[agent] metrics-file`) current: rewritten whole (``StateFile``:
/// temporary, fsync, rename) after a change, at most once every `coalesce`, and at least every `refresh`
/// even when nothing changes, so that a stale `node_textfile_mtime_seconds` means the agent is dead, not quiet.
/// A failed write is logged once per distinct error and never stops the daemon.
package struct MetricsFileWriter: Sendable {
    let file: FilePath
    let metrics: AgentMetrics
    let logger: Logger
    let clock: any WaitClock
    /// The least time between two writes: a reflash's dozen changes become one or two writes.
    let coalesce: Duration
    /// Written at least this often. node_exporter's `node_textfile_mtime_seconds` then never lags more.
    let refresh: Duration

    /// Readable by node_exporter's user (`prometheus` on Debian): nothing in the file is secret.
    static let permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]

    package init(file: FilePath, metrics: AgentMetrics, logger: Logger, clock: any WaitClock = ContinuousWaitClock(),
                 coalesce: Duration = .seconds(2), refresh: Duration = .seconds(30)) {
        self.file = file
        self.metrics = metrics
        self.logger = logger
        self.clock = clock
        self.coalesce = coalesce
        self.refresh = refresh
    }

    private enum Wake { case changed, refreshDue }

    /// Until cancelled. Writes once at the start, then on changes and refreshes.
    package func run() async {
        let (wakeups, wake) = AsyncStream.makeStream(of: Wake.self, bufferingPolicy: .bufferingNewest(1))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [metrics] in
                for await _ in metrics.changes { wake.yield(.changed) }
            }
            group.addTask { [clock, refresh] in
                while true {
                    do { try await clock.sleep(for: refresh) } catch { return }
                    wake.yield(.refreshDue)
                }
            }
            var lastError: StateFile.Failure?
            // Taken before each write: the interval runs from when the file's contents were read.
            var lastWrite = clock.now()
            var written = write(&lastError)
            for await reason in wakeups {
                // A change with nothing new (already in the last write) waits for the refresh.
                if reason == .changed, metrics.currentVersion == written { continue }
                let since = clock.now() - lastWrite
                if since < coalesce {
                    do { try await clock.sleep(for: coalesce - since) } catch { break }
                }
                lastWrite = clock.now()
                written = write(&lastError)
            }
            group.cancelAll()
        }
    }

    /// Returns the version written (or tried: a failure is retried at the next change or refresh).
    private func write(_ lastError: inout StateFile.Failure?) -> Int {
        let version = metrics.currentVersion
        do {
            try StateFile.replace(file, with: metrics.exposition(), permissions: Self.permissions, createDirectory: false)
            if lastError != nil {
                logger.notice("metrics: \(file) written again")
                lastError = nil
            }
        } catch {
            if error != lastError {
                logger.error("metrics: \(error); the agent goes on, and tries again at every change and every \(refresh)")
                lastError = error
            }
        }
        return version
    }
}
