// The entry point: the command tree (its discussion lists the exit statuses) and the start of its run on the
// main thread.

import ArgumentParser
import Dispatch
import PassthroughAgent
import PassthroughThreads

#if canImport(Glibc)
import Glibc
#endif

struct PassthroughAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passthrough-agent",
        abstract: "Keeps PCIe cards (FPGAs, XDMA/QDMA designs) where they belong: on vfio-pci in their running guest, or back on the host.",
        discussion: """
            Exit statuses: 0 success; 1 host not ready (check); 64 usage or unknown card; 69 card absent; \
            70 internal error; 71 run cannot start; 73 another agent is running; 74 a sysfs step failed and \
            was rolled back; 75 libvirt unavailable, or no daemon answers; 76 sent, no answer; 77 refused for \
            safety; 78 invalid configuration.
            """,
        subcommands: [RunCommand.self, PlanCommand.self, StatusCommand.self, CheckCommand.self, BindCommand.self, MonitorCommand.self, ReflashCommand.self]
    )
}

// Swift reads the arguments from /proc/self/cmdline. Without /proc (a chroot an installer or Ansible runs it in)
// they come back empty, and the command would print its help and exit 0 as if asked nothing: an Ansible
// `validate: passthrough-agent check --config %s` would then accept any file. Nothing can be done without them.
if CommandLine.argc == 0 {
    let message = "passthrough-agent: cannot read its command line from /proc/self/cmdline (is /proc mounted?)\n"
    _ = message.utf8CString.withUnsafeBufferPointer { write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
    exit(ExitStatus.osError)
}

// Every command, the daemon above all, runs its tasks on the main thread (see MainThreadExecutor):
// an idle `run` sleeps until something happens instead of waking every second for libdispatch.
let executor = MainThreadExecutor.shared
let ownExecutor = executor.installAsGlobalExecutor()
Task {
    await PassthroughAgentCommand.main()
    exit(0)
}
if ownExecutor {
    executor.run()
} else {
    dispatchMain()  // toolchains before Swift 6.3: libdispatch runs the tasks
}
