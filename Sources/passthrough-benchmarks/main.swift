import Foundation

// Prints figures; asserts nothing. `make bench` runs it under umockdev-wrapper.
/// Unbuffered, so a crash in the middle still leaves the figures already measured.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
func format(_ duration: Duration) -> String {
    let nanoseconds = Double(duration.components.seconds) * 1e9 + Double(duration.components.attoseconds) / 1e9
    if nanoseconds < 1e3 { return String(format: "%.0f ns", nanoseconds) }
    if nanoseconds < 1e6 { return String(format: "%.1f µs", nanoseconds / 1e3) }
    if nanoseconds < 1e9 { return String(format: "%.1f ms", nanoseconds / 1e6) }
    return String(format: "%.2f s", nanoseconds / 1e9)
}

let arguments = CommandLine.arguments
let idleSeconds = arguments.firstIndex(of: "--idle").flatMap { Int(arguments[$0 + 1]) } ?? 10
let stormEvents = arguments.firstIndex(of: "--events").flatMap { Int(arguments[$0 + 1]) } ?? 10_000

say("passthrough-agent benchmarks (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
let decision = ReconcileBenchmark.run()
say("reconcile decision (pure core, 8 cards, 64 functions), \(decision.decisions) decisions: p50 \(format(decision.p50)), p99 \(format(decision.p99)), max \(format(decision.max))  [target p99 < 1 ms]")

let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
let agent = binaries.appendingPathComponent("passthrough-agent")
// `make bench` compiles the floor (Tests/EndToEnd/floor/floor.c) next to the agent.
let floor = binaries.appendingPathComponent("passthrough-floor")
if ProcessInfo.processInfo.environment["LD_PRELOAD"]?.contains("umockdev") != true {
    say("daemon figures skipped: run under umockdev-wrapper (make bench does)")
    exit(0)
}
do {
    let result = try DaemonBenchmark.run(agent: agent, floor: FileManager.default.isExecutableFile(atPath: floor.path) ? floor : nil,
                                         idleSeconds: idleSeconds, stormEvents: stormEvents) { agentRSS, floorRSS in
        if let floorRSS {
            let mib = { (kib: Int) in String(format: "%.1f", Double(kib) / 1024) }
            say("RSS: agent \(mib(agentRSS)) MiB, floor \(mib(floorRSS)) MiB, difference \(mib(agentRSS - floorRSS)) MiB  [goal ≤ 6 MiB]")
        } else {
            say("RSS floor skipped: no \(floor.path) (make bench compiles it)")
        }
    }
    say("run: READY after \(format(result.timeToReady)); RSS after start \(result.rssAfterStart / 1024) MiB (\(result.rssAfterStart) KiB), \(result.threads) threads  [target ≤ 16 MiB]")
    say(String(format: "idle: %.2f wake-ups/s over %d s (all threads; no watchdog configured)  [target 0/s]", result.idleWakeupsPerSecond, result.idleSeconds))
    say("storm: \(result.stormEvents) uevents for a device no card claims: \(format(result.stormCPU)) CPU in \(format(result.stormWall)) wall; RSS after \(result.rssAfterStorm / 1024) MiB (\(result.rssAfterStorm) KiB)  [target < 1 s CPU]")
    say("SIGTERM: exit status \(result.exitStatus)")
} catch {
    say("daemon benchmark failed: \(error)")
    exit(1)
}
