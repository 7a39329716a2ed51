import Foundation

/// What the kernel says about another process: memory, CPU time, context switches (wake-ups).
struct ProcessProbe {
    let pid: Int32

    var residentKiB: Int {
        field("VmRSS", in: "/proc/\(pid)/status") ?? 0
    }

    /// User + system CPU time, from /proc/<pid>/stat (clock ticks).
    var cpuTime: Duration {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.range(of: ")")?.upperBound
        else { return .zero }
        let fields = stat[afterName...].split(separator: " ")
        // Fields 14 and 15 of stat(5); after the name the list starts at field 3.
        let ticks = (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
        let perSecond = sysconf(Int32(_SC_CLK_TCK))
        return .milliseconds(ticks * 1000 / perSecond)
    }

    /// Each thread's voluntary + involuntary context switches: each one is a thread waking.
    var switchesByThread: [String: Int] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var counts: [String: Int] = [:]
        for task in tasks {
            let path = "/proc/\(pid)/task/\(task)/status"
            counts[task] = (field("voluntary_ctxt_switches", in: path) ?? 0) + (field("nonvoluntary_ctxt_switches", in: path) ?? 0)
        }
        return counts
    }

    var contextSwitches: Int { switchesByThread.values.reduce(0, +) }

    /// Wake-ups since `earlier`, counting threads that exited meanwhile as zero, new ones in full.
    func wakeups(since earlier: [String: Int]) -> Int {
        switchesByThread.reduce(0) { total, entry in total + entry.value - (earlier[entry.key] ?? 0) }
    }

    var threads: Int { field("Threads", in: "/proc/\(pid)/status") ?? 0 }

    private func field(_ name: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            return Int(line.dropFirst(name.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
        }
        return nil
    }
}
