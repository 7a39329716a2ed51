import Dispatch
import PassthroughAgent
import PassthroughThreads

#if canImport(Glibc)
import Glibc
#endif

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
