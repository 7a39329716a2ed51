import Foundation
import InMemoryLogging
import Logging
@testable import PassthroughAgent
import PassthroughThreads
import SystemPackage

/// node_exporter's textfile directory under a test's temporary root, and a writer keeping the agent's file
/// there: what `node_exporter --collector.textfile.directory=…` would read.
struct Textfile {
    let directory: FilePath
    let logs = InMemoryLogHandler()

    var file: FilePath { directory.appending("passthrough_agent.prom") }

    init(under root: FilePath, create: Bool = true) {
        directory = root.appending("var/lib/prometheus/node-exporter")
        if create { try? FileManager.default.createDirectory(atPath: directory.string, withIntermediateDirectories: true) }
    }

    /// Writes `metrics` into the file until the task is cancelled. `coalesce` zero: every change is written at once.
    func keep(_ metrics: AgentMetrics, clock: any WaitClock = ManualClock(), coalesce: Duration = .zero) -> Task<Void, Never> {
        let writer = MetricsFileWriter(file: file, metrics: metrics, logger: logs.logger(label: "metrics"),
                                       clock: clock, coalesce: coalesce, refresh: .seconds(30))
        return Task { await writer.run() }
    }

    /// The file as node_exporter reads it; `nil` while there is none.
    var text: String? { try? String(contentsOfFile: file.string, encoding: .utf8) }

    /// Its inode: a new one after every replace (a rename), so "rewritten" shows even when the text is the same.
    var inode: UInt64? {
        (try? FileManager.default.attributesOfItem(atPath: file.string))?[.systemFileNumber] as? UInt64
    }

    var mode: Int? {
        (try? FileManager.default.attributesOfItem(atPath: file.string))?[.posixPermissions] as? Int
    }

    /// What is in the directory, dot files included.
    var names: [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory.string)) ?? [] }

    /// Whether the file has all of `lines`, each as a whole line.
    func has(_ lines: String...) -> Bool {
        guard let text else { return false }
        let present = Set(text.split(separator: "\n").map(String.init))
        return lines.allSatisfy(present.contains)
    }
}
