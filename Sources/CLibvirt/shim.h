#ifndef PASSTHROUGH_CLIBVIRT_SHIM_H
#define PASSTHROUGH_CLIBVIRT_SHIM_H
#include <stddef.h> /* NULL */
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/*
 * VIR_DOMAIN_EVENT_CALLBACK() is a cast macro that Swift does not import; one typed helper per event
 * registers its callback shape without an unsafeBitCast on the Swift side:
 * CLibvirt_register<Name>(conn, cb, opaque, freecb).
 */
#define CLIBVIRT_EVENT_REGISTRATION(Name, eventID, CallbackType)                                      \
    static inline int CLibvirt_register##Name(virConnectPtr conn, CallbackType cb, void *opaque,       \
                                              virFreeCallback freecb) {                              \
        return virConnectDomainEventRegisterAny(conn, NULL, eventID, VIR_DOMAIN_EVENT_CALLBACK(cb),    \
                                                opaque, freecb);                                      \
    }

CLIBVIRT_EVENT_REGISTRATION(Lifecycle, VIR_DOMAIN_EVENT_ID_LIFECYCLE, virConnectDomainEventCallback)
CLIBVIRT_EVENT_REGISTRATION(DeviceRemoved, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                            virConnectDomainEventDeviceRemovedCallback)
CLIBVIRT_EVENT_REGISTRATION(DeviceAdded, VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, virConnectDomainEventDeviceAddedCallback)
CLIBVIRT_EVENT_REGISTRATION(DeviceRemovalFailed, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED,
                            virConnectDomainEventDeviceRemovalFailedCallback)

#undef CLIBVIRT_EVENT_REGISTRATION
#endif
