/// Limits on `recovery-timeout`.
public enum RecoveryTimeout {
    public static let `default` = Duration.seconds(60)
    public static let minimum = Duration.seconds(1)
    public static let maximum = Duration.seconds(3600)
}
