public import Hummingbird
public import CityMeshCore

/// The request context of the admin API: Hummingbird's core plus the caller's role.
public struct AdminContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by ``TokenAuthMiddleware``; nil only on the unauthenticated health routes.
    public var role: Role?
    /// Who is calling, as the ledger names it: `token:<id>`.
    public var actor: String = "anonymous"
    /// The client's IP address, when the connection has one (the console's login throttle counts by it).
    public var client: String?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.role = nil
        self.client = source.channel.remoteAddress?.ipAddress
    }

    /// Throws 403 unless the caller has at least `needed`.
    public func require(_ needed: Role) throws {
        guard let role, role >= needed else {
            throw CityMeshError(.forbidden, "this action needs the \(needed.rawValue) role; your token has \(role?.rawValue ?? "none"): ask an admin for a token with 'citymesh token create --role \(needed.rawValue)'")
        }
    }
}
