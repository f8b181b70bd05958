package ecom.hadoop;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFs;

/**
 * {@code FileContext}'s checksummed local file system over {@link NioRawLocalFileSystem}, as
 * Hadoop's LocalFs; Delta Lake commits through it ({@code fs.AbstractFileSystem.file.impl}).
 */
public class NioLocalFs extends ChecksumFs {
  public NioLocalFs(URI uri, Configuration conf) throws IOException, URISyntaxException {
    super(new NioRawLocalFs(uri, conf));
  }
}
