/* rtnetlink helpers for sandbox networking: the host bridge, veth pairs
 * whose peer is born inside a sandbox's network namespace, bridge port
 * isolation, and listing/deleting our links.
 *
 * Raw rtnetlink through libmnl, never `ip`: one request and its ACK per
 * operation (~tens of µs), no process to spawn (~2 ms per `ip` here).
 * Every call opens its own socket (SOCK_CLOEXEC) and closes it, so the
 * helpers are safe from any thread of a future daemon. */
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/util.h"
#include "runtime/net.h"

typedef struct nl {
    struct mnl_socket *sock;
    unsigned int portid;
    uint32_t seq;
    char buf[32768]; /* MNL_SOCKET_BUFFER_SIZE is not a constant */
} nl;

static int nl_open(nl *n)
{
    n->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (n->sock == NULL)
        return -errno;
    if (mnl_socket_bind(n->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        int e = errno;
        mnl_socket_close(n->sock);
        return -e;
    }
    n->portid = mnl_socket_get_portid(n->sock);
    n->seq = (uint32_t)time(NULL);
    return 0;
}

static struct nlmsghdr *nl_msg(nl *n, uint16_t type, uint16_t flags)
{
    struct nlmsghdr *h = mnl_nlmsg_put_header(n->buf);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | flags;
    h->nlmsg_seq = ++n->seq;
    return h;
}

/* Send one request and wait for its ACK (or dump end); cb sees data
 * messages. Returns 0 or -errno. */
static int nl_talk(nl *n, struct nlmsghdr *h, mnl_cb_t cb, void *data)
{
    int r;

    if (mnl_socket_sendto(n->sock, h, h->nlmsg_len) < 0)
        return -errno;
    do {
        ssize_t len = mnl_socket_recvfrom(n->sock, n->buf, sizeof(n->buf));
        if (len < 0)
            return -errno;
        r = mnl_cb_run(n->buf, (size_t)len, n->seq, n->portid, cb, data);
    } while (r > 0);
    return r < 0 ? -errno : 0;
}

static struct ifinfomsg *put_ifinfo(struct nlmsghdr *h, int family, int index, unsigned flags)
{
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(h, sizeof(*ifi));
    ifi->ifi_family = (unsigned char)family;
    ifi->ifi_index = index;
    ifi->ifi_flags = flags;
    ifi->ifi_change = flags;
    return ifi;
}

static int bridge_link(nl *n, const char *name)
{
    /* NLM_F_CREATE without EXCL: an existing bridge is just brought up. */
    struct nlmsghdr *h = nl_msg(n, RTM_NEWLINK, NLM_F_CREATE | NLM_F_ACK);
    struct nlattr *li;

    put_ifinfo(h, AF_UNSPEC, 0, IFF_UP);
    mnl_attr_put_strz(h, IFLA_IFNAME, name);
    li = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "bridge");
    mnl_attr_nest_end(h, li);
    return nl_talk(n, h, NULL, NULL);
}

static int add_addr(nl *n, int index, uint32_t addr_be, int prefix)
{
    struct nlmsghdr *h = nl_msg(n, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(h, sizeof(*ifa));
    int r;

    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_index = (unsigned)index;
    mnl_attr_put_u32(h, IFA_LOCAL, addr_be);
    mnl_attr_put_u32(h, IFA_ADDRESS, addr_be);
    r = nl_talk(n, h, NULL, NULL);
    return r == -EEXIST ? 0 : r;
}

int pe__nl_bridge_ensure(const char *name, uint32_t addr_be, int prefix, pe_err *err)
{
    nl n;
    int r, index;

    r = nl_open(&n);
    if (r < 0)
        return pe_err_set(err, PE_ESYS, -r, "open rtnetlink");
    r = bridge_link(&n, name);
    if (r < 0) {
        mnl_socket_close(n.sock);
        return pe_err_set(err, PE_ESYS, -r, "create bridge %s", name);
    }
    index = (int)if_nametoindex(name);
    r = index > 0 ? add_addr(&n, index, addr_be, prefix) : -errno;
    mnl_socket_close(n.sock);
    if (r < 0)
        return pe_err_set(err, PE_ESYS, -r, "address of bridge %s", name);
    return 0;
}

int pe__nl_veth_add(const char *host, const char *master, const char *peer, int netns_fd,
                    pe_err *err)
{
    nl n;
    struct nlmsghdr *h;
    struct nlattr *li, *data, *pn;
    int r, mindex = (int)if_nametoindex(master);

    if (mindex <= 0)
        return pe_err_sys(err, "bridge %s", master);
    r = nl_open(&n);
    if (r < 0)
        return pe_err_set(err, PE_ESYS, -r, "open rtnetlink");
    h = nl_msg(&n, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
    put_ifinfo(h, AF_UNSPEC, 0, IFF_UP);
    mnl_attr_put_strz(h, IFLA_IFNAME, host);
    mnl_attr_put_u32(h, IFLA_MASTER, (uint32_t)mindex);
    li = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "veth");
    data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    /* The peer is born in the sandbox's namespace: it never exists on the
     * host, so nothing there can race to configure or grab it. */
    pn = mnl_attr_nest_start(h, VETH_INFO_PEER);
    put_ifinfo(h, AF_UNSPEC, 0, 0);
    mnl_attr_put_strz(h, IFLA_IFNAME, peer);
    mnl_attr_put_u32(h, IFLA_NET_NS_FD, (uint32_t)netns_fd);
    mnl_attr_nest_end(h, pn);
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, li);
    r = nl_talk(&n, h, NULL, NULL);
    mnl_socket_close(n.sock);
    if (r < 0)
        return pe_err_set(err, PE_ESYS, -r, "create veth %s", host);
    return 0;
}

int pe__nl_port_isolate(const char *dev, pe_err *err)
{
    nl n;
    struct nlmsghdr *h;
    struct nlattr *pi;
    int r, index = (int)if_nametoindex(dev);

    if (index <= 0)
        return pe_err_sys(err, "isolate bridge port %s", dev);
    r = nl_open(&n);
    if (r < 0)
        return pe_err_set(err, PE_ESYS, -r, "open rtnetlink");
    h = nl_msg(&n, RTM_SETLINK, NLM_F_ACK);
    put_ifinfo(h, AF_BRIDGE, index, 0);
    pi = mnl_attr_nest_start(h, IFLA_PROTINFO);
    mnl_attr_put_u8(h, IFLA_BRPORT_ISOLATED, 1);
    mnl_attr_nest_end(h, pi);
    r = nl_talk(&n, h, NULL, NULL);
    mnl_socket_close(n.sock);
    if (r < 0)
        return pe_err_set(err, PE_ESYS, -r, "isolate bridge port %s", dev);
    return 0;
}

int pe__nl_link_del(const char *name)
{
    nl n;
    struct nlmsghdr *h;
    int r = nl_open(&n);

    if (r < 0)
        return r;
    h = nl_msg(&n, RTM_DELLINK, NLM_F_ACK);
    put_ifinfo(h, AF_UNSPEC, 0, 0);
    mnl_attr_put_strz(h, IFLA_IFNAME, name);
    r = nl_talk(&n, h, NULL, NULL);
    mnl_socket_close(n.sock);
    return r;
}

struct link_list {
    const char *prefix;
    char (*names)[PE_NET_IFNAME_MAX];
    int max, n;
};

static int on_link_attr(const struct nlattr *a, void *data)
{
    struct link_list *ll = data;
    const char *name;

    if (mnl_attr_get_type(a) != IFLA_IFNAME || mnl_attr_validate(a, MNL_TYPE_STRING) < 0)
        return MNL_CB_OK;
    name = mnl_attr_get_str(a);
    if (strncmp(name, ll->prefix, strlen(ll->prefix)) == 0 && ll->n < ll->max &&
        strlen(name) < PE_NET_IFNAME_MAX)
        snprintf(ll->names[ll->n++], PE_NET_IFNAME_MAX, "%s", name);
    return MNL_CB_OK;
}

static int on_link(const struct nlmsghdr *h, void *data)
{
    return mnl_attr_parse(h, sizeof(struct ifinfomsg), on_link_attr, data);
}

int pe__nl_links_with_prefix(const char *prefix, char (*names)[PE_NET_IFNAME_MAX], int max)
{
    struct link_list ll = {.prefix = prefix, .names = names, .max = max, .n = 0};
    nl n;
    struct nlmsghdr *h;
    int r = nl_open(&n);

    if (r < 0)
        return r;
    h = nl_msg(&n, RTM_GETLINK, NLM_F_DUMP);
    put_ifinfo(h, AF_UNSPEC, 0, 0);
    r = nl_talk(&n, h, on_link, &ll);
    mnl_socket_close(n.sock);
    return r < 0 ? r : ll.n;
}
