# Install rules and the package files consumers build against. Included at the
# end of the root CMakeLists.txt, so every target below already exists.
#
#   include/cachet.h                      the one public header
#   lib/libcachet.a, lib/libcachet.so*    SONAME libcachet.so.<major>
#   lib/pkgconfig/cachet.pc               pkg-config, shared and --static
#   lib/cmake/cachet/                     find_package(cachet):
#                                           cachet::cachet        (shared)
#                                           cachet::cachet_static
#   bin/cachet                            the CLI
#   share/man/man1/cachet.1               its manual
#
# Directories come from GNUInstallDirs (included by the root file), so a
# distribution's lib64 or multiarch libdir is honoured. Two install
# components let a packager split them: "runtime" (the shared object, the CLI,
# the manual) and "development" (the rest).

include(CMakePackageConfigHelpers)

set(CACHET_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cachet)

# Consumers see cachet::cachet for the shared library, as the package name
# promises, and cachet::cachet_static for the archive.
set_target_properties(cachet_shared PROPERTIES EXPORT_NAME cachet)
set_target_properties(cachet_static PROPERTIES EXPORT_NAME cachet_static)

install(TARGETS cachet_shared cachet_static
  EXPORT cachetTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
    NAMELINK_COMPONENT development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)

# Only the public header: src/*.h are internal and never installed.
install(FILES ${CMAKE_SOURCE_DIR}/include/cachet.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)

install(TARGETS cachet_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  COMPONENT runtime)
install(FILES ${CMAKE_SOURCE_DIR}/docs/cachet.1
  DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)

# ---- CMake package -------------------------------------------------------
# The exported targets name PkgConfig::HIREDIS, PkgConfig::SODIUM,
# PkgConfig::OPENSSL and Threads::Threads in their link interface;
# cachetConfig.cmake re-creates them in the consumer's project before it
# loads cachetTargets.cmake.
install(EXPORT cachetTargets
  FILE cachetTargets.cmake
  NAMESPACE cachet::
  DESTINATION ${CACHET_CMAKE_DIR}
  COMPONENT development)

configure_package_config_file(
  ${CMAKE_SOURCE_DIR}/cmake/cachetConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cachetConfig.cmake
  INSTALL_DESTINATION ${CACHET_CMAKE_DIR})
# The SONAME carries the major version, so any release with the same major
# version is a compatible one.
write_basic_package_version_file(
  ${CMAKE_BINARY_DIR}/cachetConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  ${CMAKE_BINARY_DIR}/cachetConfig.cmake
  ${CMAKE_BINARY_DIR}/cachetConfigVersion.cmake
  DESTINATION ${CACHET_CMAKE_DIR}
  COMPONENT development)

# ---- pkg-config ----------------------------------------------------------
# The prefix is derived from the .pc file's own location (${pcfiledir}), so
# the file stays right whatever `cmake --install --prefix` or DESTDIR is used
# at install time, not only for the CMAKE_INSTALL_PREFIX seen here. An
# absolute libdir or includedir given at configure time is used as it is.
set(_pc_libdir_rel ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(CACHET_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(CACHET_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  # One "/.." per component of <libdir>/pkgconfig leads back to the prefix.
  string(REGEX REPLACE "[^/]+" ".." _pc_up "${_pc_libdir_rel}")
  string(REGEX REPLACE "/+$" "" _pc_up "${_pc_up}")
  set(CACHET_PC_PREFIX "\${pcfiledir}/${_pc_up}")
  set(CACHET_PC_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CACHET_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(CACHET_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${CMAKE_SOURCE_DIR}/cmake/cachet.pc.in
  ${CMAKE_BINARY_DIR}/cachet.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/cachet.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT development)
