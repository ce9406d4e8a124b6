// A real HDFS for the tests: Hadoop's MiniDFSCluster (a NameNode and a DataNode in this JVM,
// from org.apache.hadoop:hadoop-client-minicluster), on loopback ports, until stdin closes.
// Run in source-file mode: java -cp <jars> tests/hdfs/MiniHdfs.java <base dir> <rpc port> <http port>
// Prints "ready hdfs://127.0.0.1:<rpc port> webhdfs://127.0.0.1:<http port>" once it serves.

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public class MiniHdfs {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, args[0]);
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setBoolean("dfs.webhdfs.enabled", true);
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.namenode.http-address", "127.0.0.1:" + args[2]);
        // WebHDFS writes go through a DFSClient inside the DataNode, which closes a file by asking
        // the NameNode whether its last block is complete, first after 400 ms by default: with one
        // DataNode on loopback the block is complete at once, so ask after 10 ms.
        conf.setInt("dfs.client.block.write.locateFollowingBlock.initial.delay.ms", 10);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
                .nameNodePort(Integer.parseInt(args[1]))
                .nameNodeHttpPort(Integer.parseInt(args[2]))
                .numDataNodes(1)
                .format(true)
                .build();
        cluster.waitActive();
        System.out.println("ready hdfs://127.0.0.1:" + args[1] + " webhdfs://127.0.0.1:" + args[2]);
        System.out.flush();
        while (System.in.read() != -1) {
            // serve until the test closes our stdin (or kills us)
        }
        cluster.shutdown();
    }
}
