/// The version of this build of CityMesh.
public enum CityMeshVersion {
    public static let current = "0.1.0"
}
