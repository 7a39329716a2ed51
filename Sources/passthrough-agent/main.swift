import Dispatch
import PassthroughThreads

#if canImport(Glibc)
import Glibc
#endif

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
