/* abi_dump.c: prints the compiled layout of the shared region and the ABI
 * constants as KEY=VALUE lines; tests/unit/core/test_hook_abi.py compares
 * them with vgpu_dra/core/hook_abi.py. */
#include <stddef.h>
#include <stdio.h>

#include "vgpu_hook.h"

#define OFF(s, f) printf("offset.%s.%s=%zu\n", #s, #f, offsetof(struct s, f))

int main(void)
{
    printf("sizeof.vgpu_region=%zu\n", sizeof(struct vgpu_region));
    printf("sizeof.vgpu_proc_slot=%zu\n", sizeof(struct vgpu_proc_slot));
    OFF(vgpu_region, magic);
    OFF(vgpu_region, major);
    OFF(vgpu_region, minor);
    OFF(vgpu_region, size);
    OFF(vgpu_region, device_count);
    OFF(vgpu_region, generation);
    OFF(vgpu_region, lock);
    OFF(vgpu_region, limit);
    OFF(vgpu_region, sm_limit);
    OFF(vgpu_region, used_total);
    OFF(vgpu_region, priority);
    OFF(vgpu_region, utilization_switch);
    OFF(vgpu_region, proc_count);
    OFF(vgpu_region, flags);
    OFF(vgpu_region, coord_heartbeat_ns);
    OFF(vgpu_region, coord_epoch);
    OFF(vgpu_region, coord_flags);
    OFF(vgpu_region, assigned_rate);
    OFF(vgpu_region, launch_count);
    OFF(vgpu_region, throttled_ms);
    OFF(vgpu_region, reserved);
    OFF(vgpu_region, procs);
    OFF(vgpu_proc_slot, pid);
    OFF(vgpu_proc_slot, status);
    OFF(vgpu_proc_slot, launches);
    OFF(vgpu_proc_slot, throttled_ns);
    OFF(vgpu_proc_slot, used);
    OFF(vgpu_proc_slot, reserved);
    printf("sizeof.vgpu_ledger=%zu\n", sizeof(struct vgpu_ledger));
    OFF(vgpu_ledger, magic);
    OFF(vgpu_ledger, major);
    OFF(vgpu_ledger, minor);
    OFF(vgpu_ledger, size);
    OFF(vgpu_ledger, device_count);
    OFF(vgpu_ledger, context_charge);
    OFF(vgpu_ledger, coord_heartbeat_ns);
    OFF(vgpu_ledger, coord_epoch);
    OFF(vgpu_ledger, coord_flags);
    OFF(vgpu_ledger, assigned_rate);
    OFF(vgpu_ledger, usage_heartbeat_ns);
    OFF(vgpu_ledger, usage_adjust);
    OFF(vgpu_ledger, footprint);
    OFF(vgpu_ledger, reserved);
    printf("VGPU_REGION_MAGIC=%u\n", VGPU_REGION_MAGIC);
    printf("VGPU_REGION_MAJOR=%d\n", VGPU_REGION_MAJOR);
    printf("VGPU_REGION_MINOR=%d\n", VGPU_REGION_MINOR);
    printf("VGPU_MAX_DEVICES=%d\n", VGPU_MAX_DEVICES);
    printf("VGPU_MAX_PROCS=%d\n", VGPU_MAX_PROCS);
    printf("VGPU_SLOT_LOCK_BASE=%d\n", VGPU_SLOT_LOCK_BASE);
    return 0;
}
