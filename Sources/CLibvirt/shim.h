#ifndef PASSTHROUGH_CLIBVIRT_SHIM_H
#define PASSTHROUGH_CLIBVIRT_SHIM_H
#include <stddef.h> /* NULL */
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/*
 * VIR_DOMAIN_EVENT_CALLBACK() is a cast macro that Swift does not import; these typed helpers
 * register each callback shape without an unsafeBitCast on the Swift side.
 */
static inline int CLibvirt_registerLifecycle(virConnectPtr conn, virConnectDomainEventCallback cb,
                                             void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}

static inline int CLibvirt_registerDeviceRemoved(virConnectPtr conn,
                                                 virConnectDomainEventDeviceRemovedCallback cb,
                                                 void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                            VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}

static inline int CLibvirt_registerDeviceAdded(virConnectPtr conn,
                                               virConnectDomainEventDeviceAddedCallback cb,
                                               void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                                            VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}

static inline int CLibvirt_registerDeviceRemovalFailed(virConnectPtr conn,
                                                       virConnectDomainEventDeviceRemovalFailedCallback cb,
                                                       void *opaque, virFreeCallback freecb) {
    return virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED,
                                            VIR_DOMAIN_EVENT_CALLBACK(cb), opaque, freecb);
}
#endif
